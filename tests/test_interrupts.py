"""ev3evo.interrupts: signals become a flag; safe points stop; nothing is lost or half-done.

Signals are real (``signal.raise_signal`` delivers them to this process); the cases that end
a process (a second signal under a stopping scope) run in a child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ev3evo import interrupts


def test_a_signal_is_noted_and_handled_at_the_safe_point():
    with interrupts.deferred() as scope:
        assert scope.active and not scope.stop
        assert scope.safe_point() is None  # nothing pending: goes on
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt here
        assert scope.pending == signal.SIGINT and interrupts.pending() == signal.SIGINT
        assert scope.safe_point() == signal.SIGINT
        assert scope.pending is None  # handled: the next one is a first one again
        signal.raise_signal(signal.SIGTERM)
        assert scope.safe_point() == signal.SIGTERM
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert interrupts.active() is None and interrupts.pending() is None


def test_a_stopping_scope_raises_interrupted_at_its_safe_point():
    with interrupts.deferred(stop=True) as scope:
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(interrupts.Interrupted) as e:
            scope.safe_point("at step 3")
    assert e.value.exit_code == 143 and str(e.value) == "interrupted by SIGTERM at step 3"
    assert isinstance(e.value, KeyboardInterrupt)  # code that stops on Ctrl-C stops on it


def test_a_second_sigint_in_a_library_scope_is_a_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # as without ev3evo: raised here
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_no_safe_point_handled_is_delivered_when_the_scope_ends():
    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        reached.append("after the signal")  # the work inside the scope was not cut
    assert reached == ["after the signal"]


def test_scopes_nest_and_the_outermost_decides():
    with interrupts.deferred(stop=True) as outer:
        with interrupts.deferred() as inner:
            assert inner is outer and inner.stop
        assert interrupts.active() is outer  # the inner one did not uninstall anything
        assert signal.getsignal(signal.SIGINT) == outer._handler


def test_handlers_of_others_and_ignored_signals_are_left_alone():
    mine = lambda signum, frame: None
    old = signal.signal(signal.SIGTERM, mine)
    try:
        with interrupts.deferred() as scope:
            assert signal.getsignal(signal.SIGTERM) is mine
            assert signal.SIGINT in scope._previous and signal.SIGTERM not in scope._previous
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


def test_outside_the_main_thread_a_scope_is_inactive():
    seen = {}

    def work():
        with interrupts.deferred() as scope:
            seen["active"], seen["pending"] = scope.active, scope.pending

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == {"active": False, "pending": None}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("orig_argv, script, expected", [
    (["python", "-m", "ev3evo.cli", "distill"], "-m", True),
    (["python", "-X", "importtime", "-m", "ev3evo.cli"], "-m", True),
    (["python", "-mev3evo.cli"], "-m", True),
    (["/venv/bin/python", "/venv/bin/ev3evo", "distill"], "/venv/bin/ev3evo", True),
    (["python", "train.py"], "train.py", False),
    (["python", "-c", "import ev3evo"], "-c", False),
    (["python", "-m", "pytest", "tests"], "-m", False),
    (["python"], "", False),
])
def test_running_the_command_is_judged_from_the_command_line(orig_argv, script, expected):
    assert interrupts.running_the_command(orig_argv, script) is expected


def _child(code: str, *signals_: int) -> subprocess.CompletedProcess:
    """Runs ``code`` in a child that prints READY and then waits; sends ``signals_``."""
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "READY"
    for s in signals_:
        p.send_signal(s)
        time.sleep(0.2)  # two signals pending at once would merge into one (POSIX)
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.mark.slow
def test_a_second_signal_under_a_stopping_scope_ends_the_process_at_once():
    """Even while the main thread is blocked in C code (here ``time.sleep``, as in an XLA
    compilation) the wake-up thread sees the second signal and ends the process."""
    code = """
        import time
        from ev3evo import interrupts
        with interrupts.deferred(stop=True, label="demo"):
            print("READY", flush=True)
            time.sleep(30)
            print("the sleep ended", flush=True)
    """
    done = _child(code, signal.SIGINT, signal.SIGINT)
    assert done.returncode == 130
    assert done.stderr.strip() == ("demo: SIGINT again: stopped at once (the checkpoints "
                                   "already written stay usable)")
    assert "the sleep ended" not in done.stdout


def test_a_first_signal_without_a_safe_point_is_acknowledged_in_one_line():
    code = """
        import time
        from ev3evo import interrupts
        with interrupts.deferred(stop=True, label="demo") as scope:
            print("READY", flush=True)
            time.sleep(interrupts.NOTICE_SECONDS + 1.5)
            try:
                scope.safe_point("after the long phase")
            except interrupts.Interrupted as e:
                print(e, flush=True)
                raise SystemExit(e.exit_code)
    """
    done = _child(code, signal.SIGTERM)
    assert done.returncode == 143
    assert done.stdout.strip().endswith("interrupted by SIGTERM after the long phase")
    assert done.stderr.strip() == ("demo: SIGTERM received: stopping at the next safe point "
                                   "(send it again to stop at once)")


def test_the_module_imports_only_the_standard_library():
    """It is imported first by the command, before anything heavy."""
    code = ("import sys, importlib.util, os; "
            "spec = importlib.util.spec_from_file_location('i', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(sorted(k for k in ('jax', 'numpy', 'ev3evo') if k in sys.modules))")
    path = os.path.join(os.path.dirname(interrupts.__file__), "interrupts.py")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_scope_in_another_thread_does_not_hide_the_main_threads_own():
    ready, release = threading.Event(), threading.Event()

    def work():
        with interrupts.deferred():
            ready.set()
            release.wait(10)

    t = threading.Thread(target=work)
    t.start()
    ready.wait(10)
    try:
        with interrupts.deferred() as scope:
            assert scope.active
            signal.raise_signal(signal.SIGTERM)
            assert scope.safe_point() == signal.SIGTERM
    finally:
        release.set()
        t.join()
