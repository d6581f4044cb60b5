"""What the distillation plots draw (matplotlib artists, not pixels): legends beside the
data, lines broken at growths and resumes, step 0 marked, markers within the data, and a
comparison chart from 0 whose title says what was equal."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt
import pytest

from ev3evo.distillation import report


def _rec(step, seconds, acc, stable=None, **kw):
    return {"step": step, "seconds": seconds, "current": {"accuracy": acc},
            "stable": {"accuracy": acc if stable is None else stable},
            "allocation": {"gradient": 6, "evosax": 4, "mutation": 2}, **kw}


GROW = {"event": "grow", "step": 2, "seconds": 2.1, "growth_seconds": 5.3, "accepted": True}
LATE_GROW = {"event": "grow", "step": 6, "seconds": 11.0, "growth_seconds": 4.0,
             "accepted": True}
RESUME = {"event": "resume", "step": 4}
HISTORY = [_rec(0, 0.0, 0.3, initial=True), _rec(1, 1.0, 0.5, 0.3), _rec(2, 2.0, 0.6),
           GROW, _rec(3, 7.5, 0.62, 0.6), _rec(4, 8.5, 0.7), RESUME, _rec(5, 9.5, 0.71),
           _rec(6, 10.5, 0.72), LATE_GROW]
STEPS = [r for r in HISTORY if "event" not in r]
EVENTS = [GROW, RESUME, LATE_GROW]


def _drawn(fig):
    fig.canvas.draw()
    return fig.axes[0], fig.canvas.get_renderer()


def _legend_is_outside(ax, renderer):
    legend, box = ax.get_legend(), ax.get_window_extent(renderer)
    assert legend is not None
    assert legend.get_window_extent(renderer).x0 >= box.x1  # to the right of the axes


@pytest.mark.parametrize("key", ["step", "seconds"])
def test_metric_plots_break_at_growth_and_resume_and_show_step_0(key):
    fig = report.metric_figure(plt, STEPS, EVENTS, "accuracy", key, key)
    ax, renderer = _drawn(fig)
    _legend_is_outside(ax, renderer)
    lines = {g: [li for li in ax.get_lines() if li.get_gid() == g]
             for g in ("current", "stable", "initial", "growth", "resume")}
    # one line per segment: [0, 1, 2] | growth | [3, 4] | resume | [5, 6]
    segments = [list(li.get_xdata()) for li in lines["current"]]
    x = {r["step"]: r[key] for r in STEPS}
    assert segments == [[x[0], x[1], x[2]], [x[3], x[4]], [x[5], x[6]]]
    assert len(lines["stable"]) == 3
    (initial,) = lines["initial"]  # the starting model, at step 0 / second 0
    assert list(initial.get_xdata()) == [0.0] and list(initial.get_ydata()) == [0.3]
    left, right = ax.get_xlim()
    assert left <= 0.0 and right >= x[6]
    # the growth at step 2 is drawn (a band over its recompilation in time), the one after
    # the last step is not: every marker lies within the data
    growth = [a for a in ax.patches + ax.lines if a.get_gid() == "growth"]
    assert len(growth) == 1
    if key == "seconds":
        # the band's corners in data coordinates: from the growth to its end
        corners = growth[0].get_transform().transform([(0, 0), (1, 1)])  # on the screen
        xs = ax.transData.inverted().transform(corners)[:, 0]
        assert xs.min() == pytest.approx(2.1) and xs.max() == pytest.approx(7.4)
    else:
        assert list(growth[0].get_xdata()) == [2.5, 2.5]
    (resume,) = lines["resume"]
    assert left <= resume.get_xdata()[0] <= right
    assert ax.get_title().endswith("(lines break where the run grew the student or resumed; "
                                   "a growth after the last step, 4.0 s, not drawn)")
    only_resumed = report.metric_figure(plt, STEPS, [RESUME], "accuracy", key, key)
    assert only_resumed.axes[0].get_title().endswith("(lines break where the run resumed)")
    plt.close(only_resumed)
    plt.close(fig)


def test_allocation_legend_beside_the_stack_from_step_0():
    fig = report.allocation_figure(plt, STEPS, EVENTS)
    ax, renderer = _drawn(fig)
    _legend_is_outside(ax, renderer)
    assert ax.get_xlim() == (0.0, 6.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "gradient", "evosax", "mutation", "resumed"]
    plt.close(fig)


def _summary(ev3_seconds, baselines, certified=True):
    row = lambda acc, seconds, **kw: {"test": {"accuracy": acc}, "validation": {"accuracy": acc},
                                      "seconds": seconds, "params": 10, **kw}
    methods = {"ev3": row(0.9, ev3_seconds, certified=certified)}
    methods.update({name: row(acc, s, budget=ev3_seconds) for name, acc, s in baselines})
    return {"primary": "accuracy", "teacher": row(0.95, None), "methods": methods}


@pytest.mark.parametrize("baselines, claim", [
    ([], "(no baselines were run: EV3's student beside the teacher)"),
    ([("kd_adam", 0.85, 45.0), ("es_open_es", 0.8, 46.0)],
     "(equal wall time: each method ran about 46.0 s)"),
    ([("kd_adam", 0.85, 1.3), ("es_open_es", 0.8, 46.0)],
     "(not equal wall time: EV3 ran 46.0 s; each baseline was given up to 46.0 s and used "
     "1.3-46.0 s)"),
])
def test_comparison_title_states_what_was_equal_and_the_axis_starts_at_0(baselines, claim):
    fig = report.comparison_figure(plt, _summary(46.0, baselines), "accuracy")
    ax = fig.axes[0]
    assert ax.get_title().splitlines() == ["test accuracy by method", claim]
    assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= 1.0
    assert [b.get_height() for b in ax.patches] == [0.95, 0.9, *[a for _, a, _ in baselines]]
    plt.close(fig)


def test_an_uncertified_ev3_bar_says_it_is_the_initial_model():
    fig = report.comparison_figure(plt, _summary(5.0, [], certified=False), "accuracy")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["teacher", "ev3\n(initial model)"]
    plt.close(fig)


def test_plot_history_writes_the_three_pngs(tmp_path):
    paths = report.plot_history(HISTORY, tmp_path, "accuracy")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["metric_vs_step.png", "metric_vs_time.png",
                                                    "allocation.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 0 for p in paths)


def _methods(**rows):
    return {name: {"validation": {"ece": e, "accuracy": a}, "test": {"ece": e, "accuracy": a}}
            for name, (e, a) in rows.items()}


def test_the_best_method_meets_the_constraints_or_misses_them_by_least():
    methods = _methods(kd=(0.20, 0.60), es=(0.01, 0.17), ev3=(0.04, 0.59))
    summary = {"methods": methods, "constraints": ["accuracy>=0.55"]}
    assert report.best_method({"methods": methods}, "ece") == "es"  # unconstrained
    assert report.best_method(summary, "ece") == "ev3"  # es misses accuracy>=0.55
    assert report.best(methods, "ece", ["accuracy>=0.55"])["method"] == "ev3"
    # none meets it: the one closest to meeting it, whatever its ece
    assert report.best_method({**summary, "constraints": ["accuracy>=0.9"]}, "ece") == "kd"
    # a rate met by exactly its count, read back from float32 (396 / 400), meets >= 0.99
    exact = _methods(a=(0.05, 0.98999995), b=(0.01, 0.985))
    assert report.best_method({"methods": exact, "constraints": ["accuracy>=0.99"]},
                              "ece") == "a"
    assert report.shortfall(exact["a"], "test", ["accuracy>=0.99"]) == 0.0
    line = report.table({"primary": "ece", "metrics": ["ece", "accuracy"],
                         "teacher": {"test": {}, "validation": {}}, **summary})
    assert "best student on validation ece meeting the constraints: ev3" in line
