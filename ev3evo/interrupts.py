"""Signals as a flag checked at safe points: SIGINT and SIGTERM never cut work in half.

Python turns Ctrl-C into a ``KeyboardInterrupt`` raised wherever the main thread happens to
be: in the middle of an import, of a checkpoint write, or inside a Python callback that JAX
runs while it lowers and compiles a program (where it can leave XLA in a state that ends in a
native crash). :func:`deferred` replaces that, for the signals in :data:`SIGNALS`, by a flag:
the signal is noted and nothing is raised; the code inside the scope looks at the flag at its
*safe points* (between two steps of :func:`ev3evo.run`, between the phases of a pipeline)
and stops there, after saving what it has.

What a safe point does depends on the outermost scope:

* ``deferred()`` (a library call, e.g. :func:`ev3evo.run` on its own): :meth:`Deferral.
  safe_point` returns the signal and the caller ends with a status (``run`` returns a result
  with ``status="interrupted"``). A second signal gets the behaviour it would have had without
  ev3evo (``KeyboardInterrupt`` for SIGINT, the default action for SIGTERM), and a signal that
  no safe point handled is delivered that way when the scope ends: nothing is lost.
* ``deferred(stop=True)`` (the ``ev3evo`` command): a safe point raises :class:`Interrupted`
  (a ``KeyboardInterrupt``) naming the signal, which the command reports in one line with exit
  code ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). A second signal ends the process at
  once with one line (``os._exit``: no traceback, no clean-up that could crash), even while the
  main thread is inside a compilation: a thread woken by :func:`signal.set_wakeup_fd` sees it.
  When no safe point comes within :data:`NOTICE_SECONDS`, one line says the signal was
  received.

Scopes nest: an inner ``deferred()`` joins the outermost one (same flag, same policy), so
``run`` inside the command obeys the command. Handlers are installed only from the main thread
and only for signals whose handler is Python's default (a handler someone else installed, or
an ignored signal, is left alone); elsewhere a scope is inactive and :attr:`Deferral.pending`
stays ``None``. The ``ev3evo`` command opens its scope before its heavy imports
(:func:`defer_for_command`, called first thing by ``import ev3evo`` when the running program
is that command).

Example::

    import signal
    from ev3evo import interrupts

    with interrupts.deferred() as scope:
        signal.raise_signal(signal.SIGTERM)   # noted; nothing is raised here
        assert scope.pending == signal.SIGTERM
        assert scope.safe_point() == signal.SIGTERM   # the caller stops here, cleanly
    assert interrupts.pending() is None
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

#: the signals a scope defers
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: seconds after a first signal without a safe point before a stopping scope says it was received
NOTICE_SECONDS = 5.0


def signal_name(signum: int) -> str:
    """``"SIGINT"``, ``"SIGTERM"``, ... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """A signal stopped the program at a safe point (raised under a stopping scope).

    Attributes:
      signum: the signal number.
      detail: what was saved (e.g. the last checkpoint), or ``""``.
      exit_code: ``128 + signum``, the shell's code for a process ended by that signal.
    """

    def __init__(self, signum: int, detail: str = ""):
        self.signum, self.detail = int(signum), detail
        super().__init__(self._text())

    def _text(self) -> str:
        return f"interrupted by {signal_name(self.signum)}" + (f" {self.detail}" if self.detail else "")

    def __str__(self) -> str:
        return self._text()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Deferral:
    """The state of a :func:`deferred` scope (shared by the scopes nested in it).

    Attributes:
      stop: safe points raise :class:`Interrupted` (the command) instead of returning.
      label: how the process names itself in the lines it prints (``"ev3evo distill"``).
    """

    def __init__(self, stop: bool, label: str):
        self.stop, self.label = stop, label
        self._lock = threading.Lock()
        self._signum: int | None = None  # received and not yet handled
        # Deliveries counted by the Python handler (main thread, between bytecodes) and by the
        # wake-up thread (at once, even while the main thread is inside C code): each sees
        # every signal, so each counts on its own and either may act on a second one.
        self._counts = {"handler": 0, "thread": 0}
        self._resolved = self._exiting = False
        self._previous: dict[int, object] = {}
        self._wakeup: tuple | None = None  # (read fd, write fd, previous wakeup fd, thread)
        self._notice: threading.Timer | None = None

    @property
    def active(self) -> bool:
        """Some signal's handler is this scope's (false outside the main thread)."""
        return bool(self._previous)

    @property
    def pending(self) -> int | None:
        """The signal received and not yet handled by a safe point, or ``None``."""
        return self._signum

    def safe_point(self, detail: str = "") -> int | None:
        """Stops here if a signal was received: raises :class:`Interrupted` in a stopping
        scope; otherwise handles it (the next signal counts as a first one again) and returns
        it. Returns ``None`` when no signal is pending."""
        signum = self._signum
        if signum is None:
            return None
        if self.stop:
            self._resolve()
            raise Interrupted(signum, detail)
        with self._lock:
            self._signum, self._counts["handler"] = None, 0
        return signum

    # ------------------------------------------------------------------ signals
    def _note(self, signum: int, by: str) -> None:
        """One delivered signal, seen ``by`` the Python handler or the wake-up thread."""
        with self._lock:
            self._counts[by] += 1
            first = self._counts[by] == 1
            if self._signum is None:
                self._signum = signum
            start_notice = self.stop and self._notice is None and not self._resolved
            if start_notice:
                self._notice = threading.Timer(NOTICE_SECONDS, self._say_received, (signum,))
                self._notice.daemon = True
        if start_notice:
            self._notice.start()
        if not first:
            self._again(signum)

    def _again(self, signum: int) -> None:
        """A second signal: at once."""
        if self.stop:
            with self._lock:
                exiting, self._exiting = self._exiting, True
            if not exiting:  # the handler and the wake-up thread may both get here
                _say(f"{self.label}: {signal_name(signum)} again: stopped at once (the "
                     "checkpoints already written stay usable)")
                os._exit(128 + signum)
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._restore_handlers()
        _deliver(signum, previous)

    def _say_received(self, signum: int) -> None:
        if not self._resolved:
            _say(f"{self.label}: {signal_name(signum)} received: stopping at the next safe "
                 "point (send it again to stop at once)")

    def _resolve(self) -> None:
        with self._lock:
            self._resolved = True
            timer, self._notice = self._notice, None
        if timer is not None:
            timer.cancel()

    def _handler(self, signum, frame) -> None:
        del frame
        self._note(signum, "handler")

    def _watch(self, read_fd: int) -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:  # one byte per delivered signal, any signal with a handler
                if signum in self._previous:
                    self._note(signum, "thread")

    # ------------------------------------------------------------------ install
    def _install(self, signals) -> None:
        for signum in signals:
            previous = signal.getsignal(signum)
            if previous in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(signum, self._handler)
                self._previous[signum] = previous
        if self.stop and self._previous:
            self._start_wakeup()

    def _start_wakeup(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            old = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # a platform that wants a socket here: handlers only
            old = None
        if old != -1:
            if old is not None:  # someone else (an event loop) relies on it: leave it to them
                signal.set_wakeup_fd(old)
            os.close(read_fd)
            os.close(write_fd)
            return
        thread = threading.Thread(target=self._watch, args=(read_fd,), daemon=True,
                                  name="ev3evo-signals")
        self._wakeup = (read_fd, write_fd, old, thread)
        thread.start()

    def _restore_handlers(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, handler)

    def _uninstall(self) -> None:
        self._resolve()
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            read_fd, write_fd, old, thread = wakeup
            signal.set_wakeup_fd(old)
            os.close(write_fd)  # the thread's read returns b"": it ends
            thread.join(1.0)
            os.close(read_fd)
        previous = dict(self._previous)
        self._restore_handlers()
        signum = self._signum
        if signum is not None and not self.stop and signum in previous:
            _deliver(signum, previous[signum])  # never lose a signal nobody handled


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode("utf-8", "replace"))


def _deliver(signum: int, handler) -> None:
    """What ``signum`` would have done under ``handler`` (the default action, or a call)."""
    if callable(handler):
        handler(signum, None)  # default_int_handler raises KeyboardInterrupt
        return
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


_ACTIVE: Deferral | None = None
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def deferred(*, stop: bool = False, label: str = "ev3evo",
             signals=SIGNALS) -> Iterator[Deferral]:
    """A scope in which ``signals`` set a flag instead of interrupting (see the module docs).

    Args:
      stop: safe points raise :class:`Interrupted` and a second signal ends the process at
        once (for a command-line program); without it safe points return the signal.
      label: the name used in the lines printed (stopping scopes only).
      signals: the signals to defer.

    Yields:
      The :class:`Deferral` (the outermost scope's, when nested).
    """
    global _ACTIVE
    with _ACTIVE_LOCK:
        outer = _ACTIVE
        main = threading.current_thread() is threading.main_thread()
        if outer is None:
            scope = Deferral(stop, label)
            if main:  # only the main thread may install handlers (and it receives signals)
                scope._install(signals)
                _ACTIVE = scope
    if outer is not None:
        yield outer
        return
    if not main:  # an inactive scope of this thread alone: nothing to share or undo
        yield scope
        return
    try:
        yield scope
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE = None
        scope._uninstall()


def active() -> Deferral | None:
    """The outermost open scope, or ``None``."""
    return _ACTIVE


def pending() -> int | None:
    """The signal received in the open scope and not yet handled, or ``None``."""
    scope = _ACTIVE
    return None if scope is None else scope.pending


def safe_point(detail: str = "") -> int | None:
    """:meth:`Deferral.safe_point` of the open scope (``None`` when there is none)."""
    scope = _ACTIVE
    return None if scope is None else scope.safe_point(detail)


def stop_point(detail: str = "") -> None:
    """A safe point that stops in any scope: raises :class:`Interrupted` if a signal is pending.

    For code that cannot end with a status (a pipeline between or inside its phases): under a
    stopping scope as :func:`safe_point`; in a library scope the signal is handled here and
    :class:`Interrupted` (a ``KeyboardInterrupt`` naming the signal and ``detail``) is raised,
    so the caller unwinds, keeping what it saved. Nothing happens without an open scope.
    """
    signum = safe_point(detail)
    if signum is not None:
        raise Interrupted(signum, detail)


def defer_for_command(label: str = "ev3evo") -> Deferral:
    """Opens a stopping scope for the rest of the process (a command's first act).

    It is never closed: the handlers stay until the process exits, so that a signal during
    the interpreter's own shutdown does not print a traceback either.
    """
    global _ACTIVE
    with _ACTIVE_LOCK:
        if _ACTIVE is None:
            scope = Deferral(True, label)
            if threading.current_thread() is threading.main_thread():
                scope._install(SIGNALS)
            _ACTIVE = scope
        return _ACTIVE


def running_the_command(orig_argv: list[str] | None = None, script: str | None = None) -> bool:
    """Whether this process is the ``ev3evo`` command: its console script (``script``,
    default ``sys.argv[0]``, named ``ev3evo``) or ``python -m ev3evo.cli`` (``orig_argv``,
    default ``sys.orig_argv``, the interpreter's own command line)."""
    if orig_argv is None:
        orig_argv = list(getattr(sys, "orig_argv", None) or [])
    if script is None:
        script = sys.argv[0] if sys.argv else ""
    if os.path.splitext(os.path.basename(script))[0] == "ev3evo":
        return True
    argv, skip = orig_argv, False
    for i, word in enumerate(argv[1:], 1):
        if skip:
            skip = False
        elif word in ("-X", "-W", "--check-hash-based-pycs"):
            skip = True  # an option with a value
        elif word == "-m":
            return argv[i + 1:i + 2] == ["ev3evo.cli"]
        elif word.startswith("-m"):
            return word[2:] == "ev3evo.cli"
        elif word == "-c" or not word.startswith("-"):
            return False  # a script or a program given inline
    return False
