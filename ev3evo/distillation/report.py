"""Outputs of a distillation run: ``summary.json``, PNG plots and the printed comparison table.

The summary is plain JSON::

    {"dataset": {...}, "config": {...}, "primary": "accuracy",
     "teacher": {"test": {...}, "validation": {...}, "params": 12345},
     "methods": {"ev3": {"test": {...}, "validation": {...}, "seconds": 41.2, "params": 610,
                         ...}, "kd_adam": {...}, "es_open_es": {...}},
     "growth": [...], "status": "finished"}

Plots use matplotlib's Agg backend (no display needed).

Example::

    from ev3evo.distillation import report
    summary = {"primary": "accuracy", "metrics": ["accuracy"],
               "teacher": {"test": {"accuracy": 0.98}, "validation": {"accuracy": 0.97},
                           "params": 100},
               "methods": {"ev3": {"test": {"accuracy": 0.95}, "validation": {"accuracy": 0.96},
                                   "seconds": 10.0, "params": 50}}}
    print(report.table(summary))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

#: the metrics every report shows, in order
METRICS = ("accuracy", "macro_f1", "agreement", "ece")
_LOWER_IS_BETTER = {"ece"}
# float32 rates read back from JSON: 396 / 400 is stored as 0.98999995 and meets ">= 0.99"
_ROUNDING = 1e-6


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4f}"


def table(summary: dict, metrics: Sequence[str] | None = None) -> str:
    """A readable fixed-width table of test (and validation) metrics for every method."""
    metrics = list(metrics or summary.get("metrics") or METRICS)
    primary = summary.get("primary", metrics[0])
    rows = [("teacher", summary["teacher"]), *summary["methods"].items()]
    head = ["method", *[f"test {m}" for m in metrics], f"val {primary}", "seconds", "params"]
    body = []
    for name, r in rows:
        body.append(
            [
                name,
                *[_fmt(r.get("test", {}).get(m)) for m in metrics],
                _fmt(r.get("validation", {}).get(primary)),
                f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-",
                str(r.get("params", "-")),
            ]
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    arrow = "lower" if primary in _LOWER_IS_BETTER else "higher"
    out.append(f"(test metrics on held-out data; {primary}: {arrow} is better)")
    out.append(_verdict(summary, primary))
    return "\n".join(out)


#: what the report says when the gate certified nothing
NOTHING_CERTIFIED = "no certified improvement: the student is the initial model"


def _verdict(summary: dict, primary: str) -> str:
    """The table's last line: the student chosen on validation, the test oracle beside it,
    and a plain word when EV3 certified nothing."""
    ev3 = summary["methods"].get("ev3", {})
    words, uncertified = [], ev3.get("certified") is False
    skip = ("teacher", "ev3") if uncertified else ("teacher",)
    chosen = best_method(summary, primary, split="validation", exclude=skip)
    oracle = best_method(summary, primary, split="test", exclude=skip)
    if uncertified:
        words.append(f"ev3: {NOTHING_CERTIFIED}")
    if chosen is not None:
        meets = " meeting the constraints" if summary.get("constraints") else ""
        if meets and shortfall(summary["methods"][chosen], "validation",
                               summary["constraints"]) > 0:
            meets = " (none meets the constraints: the one closest to meeting them)"
        words.append(f"best student on validation {primary}{meets}: {chosen}")
    if oracle is not None and oracle != chosen:
        words.append(f"best on test (an oracle choice, for reference only): {oracle}")
    return "(" + "; ".join(words) + ")" if words else ""


def shortfall(record: dict, split: str, constraints: Sequence[str]) -> float:
    """How far a method's ``split`` values miss ``constraints`` (texts such as
    ``"accuracy>=0.9"``), summed; 0 where every one holds (up to float32 rounding of the
    stored rates), ``inf`` where a value is missing."""
    from ..assess.objectives import parse_constraint

    total = 0.0
    for c in map(parse_constraint, constraints):
        v = record.get(split, {}).get(c.metric)
        if v is None or not math.isfinite(v):
            return math.inf
        gap = c.gap(v)
        total += gap if gap > _ROUNDING * max(1.0, abs(c.threshold)) else 0.0
    return total


def best_method(summary: dict, metric: str, split: str = "validation",
                exclude=()) -> str | None:
    """Name of the method with the best ``split`` value of ``metric`` (choose on validation:
    the test split only reports). Under the summary's constraints only the methods that meet
    them on ``split`` compete; when none does, those that miss them by least."""
    sign = -1.0 if metric in _LOWER_IS_BETTER else 1.0
    constraints = summary.get("constraints") or ()
    rows = {name: r for name, r in summary["methods"].items()
            if name not in exclude and r.get(split, {}).get(metric) is not None}
    if not rows:
        return None
    short = {name: shortfall(r, split, constraints) for name, r in rows.items()}
    least = min(short.values())
    return max((sign * r[split][metric], name) for name, r in rows.items()
               if short[name] <= least)[1]


def best(methods: dict, metric: str, constraints: Sequence[str] = ()) -> dict:
    """``summary.json``'s ``"best"``: the method chosen on validation ``metric`` (among those
    that meet ``constraints`` there, see :func:`best_method`), and, kept apart, the one that
    would win on test (an oracle choice no user could make). EV3 is never called the best
    when it certified nothing (its student is then the initial model)."""
    summary = {"methods": methods, "constraints": list(constraints)}
    skip = ("ev3",) if methods.get("ev3", {}).get("certified") is False else ()
    return {"metric": metric, "chosen_on": "validation",
            "method": best_method(summary, metric, "validation", skip),
            "oracle_on_test": best_method(summary, metric, "test", skip),
            **({"note": f"ev3: {NOTHING_CERTIFIED}"} if skip else {})}


def jsonable(x):
    """``x`` with every tuple made a list (JSON's only sequence), recursively through dicts."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def write_summary(path: str | os.PathLike, summary: dict) -> None:
    """Writes ``summary`` as indented JSON (atomically: a partial file never replaces a good one)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)


def read_history(path: str | os.PathLike) -> list[dict]:
    """The records of a ``history.jsonl`` file (step records and events)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _cuts(events: Sequence[dict]) -> list[int]:
    """The steps after which the curves break: an accepted growth (the next step runs a new,
    recompiled model) and a resume (the run stopped there and went on in a new process)."""
    return sorted({e["step"] for e in events
                   if e.get("event") == "resume" or (e.get("event") == "grow"
                                                      and e.get("accepted"))})


def _segments(steps: Sequence[dict], events: Sequence[dict]) -> list[list[dict]]:
    """The step records cut at every accepted growth and every resume (lines are not drawn
    across one)."""
    cuts = _cuts(events)
    segments, current = [], []
    for r in steps:
        if current and any(current[-1]["step"] <= c < r["step"] for c in cuts):
            segments.append(current)
            current = []
        current.append(r)
    return [*segments, current] if current else segments


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, never over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              fontsize="small", frameon=False)


def _within(events: Sequence[dict], steps: Sequence[dict]) -> list[dict]:
    """The events followed by a step record (a growth after the last step changed nothing
    the plot shows, so no marker is drawn past the data)."""
    last = steps[-1]["step"]
    return [e for e in events if e["step"] < last]


def metric_figure(plt, steps: Sequence[dict], events: Sequence[dict], primary: str, key: str,
                  label: str):
    """The figure of the validation ``primary`` metric against ``key`` (``"step"`` or
    ``"seconds"``): the current model's line and the stable model's steps, broken at every
    growth and resume; the initial model (step 0) marked; growths and resumes shown where
    they happened."""
    fig, ax = plt.subplots(figsize=(8.5, 4))
    for i, seg in enumerate(_segments(steps, events)):
        x = [r.get(key, float("nan")) for r in seg]
        marker = "o" if len(seg) < 3 else None  # a segment of one or two steps stays visible
        ax.plot(x, [r["current"][primary] for r in seg], color="C0", alpha=0.7, marker=marker,
                label="current θ" if i == 0 else None, gid="current")
        ax.step(x, [r["stable"][primary] for r in seg], where="post", color="C1", linewidth=2,
                marker=marker, label="stable θ_s (certified)" if i == 0 else None, gid="stable")
    first = steps[0]
    if first.get("initial"):
        ax.plot([first.get(key, 0.0)], [first["stable"][primary]], linestyle="none",
                marker="D", color="k", label="initial model (step 0)", gid="initial")
    shown = _within(events, steps)
    for i, e in enumerate(r for r in shown if r.get("event") == "grow" and r.get("accepted")):
        spent = e.get("growth_seconds", e.get("compile_seconds"))
        if key == "seconds" and spent is not None:
            ax.axvspan(e["seconds"], e["seconds"] + spent, color="grey", alpha=0.25,
                       label="growth and recompilation" if i == 0 else None, gid="growth")
        else:
            ax.axvline(e["step"] + 0.5 if key == "step" else e.get(key, float("nan")),
                       color="grey", linestyle=":", linewidth=1.5,
                       label="growth" if i == 0 else None, gid="growth")
    resumes = [e for e in shown if e.get("event") == "resume"]
    for i, e in enumerate(resumes):
        at = next(r for r in steps if r["step"] == e["step"])
        ax.axvline(at.get(key, float("nan")) + (0.5 if key == "step" else 0.0), color="k",
                   linestyle="--", linewidth=1, label="resumed" if i == 0 else None,
                   gid="resume")
    xs = [r.get(key, 0.0) for r in steps]
    pad = 0.02 * (max(xs) - min(0.0, min(xs)) or 1.0)
    ax.set_xlim(min(0.0, min(xs)) - pad, max(xs) + pad)
    ax.set_xlabel(label)
    ax.set_ylabel(f"validation {primary}")
    kinds = {"grew the student" if e.get("event") == "grow" else "resumed" for e in shown
             if e.get("event") == "resume" or e.get("accepted")}
    notes = [f"lines break where the run {' or '.join(sorted(kinds))}"] if kinds else []
    late = [e for e in events if e.get("event") == "grow" and e.get("accepted")
            and e["step"] >= steps[-1]["step"]]
    if late:  # said, not drawn: no step ran on the grown model
        spent = sum(e.get("growth_seconds") or 0.0 for e in late)
        notes.append(f"a growth after the last step, {spent:.1f} s, not drawn")
    ax.set_title(f"EV3: validation {primary} of the current and the certified model"
                 + (f"\n({'; '.join(notes)})" if notes else ""))
    _legend_outside(ax)
    return fig


def _save(plt, fig, path: str) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")  # "tight": the legend beside the axes
    plt.close(fig)


def _plot_metric(plt, steps, events, primary: str, key: str, label: str, path: str) -> None:
    _save(plt, metric_figure(plt, steps, events, primary, key, label), path)


def allocation_figure(plt, steps: Sequence[dict], events: Sequence[dict] = ()):
    """The figure of the population slots each source held at each step (from step 0)."""
    names = list(steps[0]["allocation"])
    fig, ax = plt.subplots(figsize=(8.5, 4))
    ax.stackplot([r["step"] for r in steps],
                 *[[r["allocation"].get(n, 0) for r in steps] for n in names], labels=names)
    for i, e in enumerate(r for r in _within(events, steps) if r.get("event") == "resume"):
        ax.axvline(e["step"] + 0.5, color="k", linestyle="--", linewidth=1,
                   label="resumed" if i == 0 else None, gid="resume")
    ax.set_xlim(steps[0]["step"], steps[-1]["step"])
    ax.set_xlabel("step")
    ax.set_ylabel("population slots")
    ax.set_title("EV3: slots allocated to each source")
    _legend_outside(ax)
    return fig


def plot_history(history: Sequence[dict], out_dir: str | os.PathLike, primary: str) -> list[str]:
    """Writes ``metric_vs_step.png``, ``metric_vs_time.png`` and ``allocation.png``.

    Growth events (records with ``"event": "grow"``) and resumes (``"event": "resume"``) cut
    the curves: a vertical line in the step plot, and in the time plot a grey band over the
    time a growth cost (its ``growth_seconds``: the check, the new engine, the
    recompilation), with no line drawn across either. The initial model (step 0) is marked;
    legends sit beside the axes. Returns the paths written.
    """
    plt = _pyplot()
    out_dir = os.fspath(out_dir)
    steps = [r for r in history if "event" not in r]
    events = [r for r in history if r.get("event") in ("grow", "resume")]
    paths = []
    if not steps:
        return paths
    for key, label, fname in [("step", "step", "metric_vs_step.png"),
                              ("seconds", "wall time (s)", "metric_vs_time.png")]:
        path = os.path.join(out_dir, fname)
        _plot_metric(plt, steps, events, primary, key, label, path)
        paths.append(path)
    path = os.path.join(out_dir, "allocation.png")
    _save(plt, allocation_figure(plt, steps, events), path)
    paths.append(path)
    return paths


def time_claim(summary: dict, tolerance: float = 0.1) -> str:
    """What was equal among the methods, in words: equal wall time only when every baseline
    ran within ``tolerance`` (relative) of EV3's time; no claim without baselines."""
    methods = summary["methods"]
    ev3 = methods.get("ev3", {}).get("seconds")
    used = [r["seconds"] for n, r in methods.items() if n != "ev3" and "seconds" in r]
    if not used or ev3 is None:
        return "no baselines were run: EV3's student beside the teacher"
    budget = max((r.get("budget") or 0.0) for r in methods.values())
    if all(abs(u - ev3) <= tolerance * ev3 for u in used):
        return f"equal wall time: each method ran about {ev3:.1f} s"
    return (f"not equal wall time: EV3 ran {ev3:.1f} s; each baseline was given up to "
            f"{budget:.1f} s and used {min(used):.1f}-{max(used):.1f} s")


def comparison_figure(plt, summary: dict, metric: str):
    """The bar chart of every method's test ``metric`` (teacher too), its y-axis from 0, its
    title saying what was equal (:func:`time_claim`)."""
    rows = [("teacher", summary["teacher"]), *summary["methods"].items()]
    names = [n if summary["methods"].get(n, {}).get("certified") is not False
             else f"{n}\n(initial model)" for n, _ in rows]
    vals = [r.get("test", {}).get(metric, float("nan")) for _, r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 4.5))
    colors = ["grey"] + ["C1" if n == "ev3" else "C0" for n, _ in rows[1:]]
    bars = ax.bar(names, vals, color=colors)
    for b, v in zip(bars, vals):
        if math.isfinite(v):
            ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                        fontsize="small")
    finite = [v for v in vals if math.isfinite(v)]
    bounded = metric not in _LOWER_IS_BETTER and all(0.0 <= v <= 1.0 for v in finite)
    top = 1.0 if bounded else max(finite, default=1.0)
    ax.set_ylim(0.0, 1.08 * top or 1.0)  # from 0: bar lengths compare honestly
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"test {metric} by method\n({time_claim(summary)})", fontsize="medium")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    return fig


def plot_comparison(summary: dict, out_dir: str | os.PathLike, metric: str) -> str:
    """Writes ``comparison.png`` (:func:`comparison_figure`); returns its path."""
    plt = _pyplot()
    path = os.path.join(os.fspath(out_dir), "comparison.png")
    _save(plt, comparison_figure(plt, summary, metric), path)
    return path
