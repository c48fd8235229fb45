"""Figures from recorded data only: range tests (Fig. 2b, Fig. 4), schedules, eq. 8 estimates
(Fig. 5) and metric curves over seeds.

Every function draws what it is given and computes nothing a report states (the
suggested LRs and the plateau come from :func:`superconv.suggest.suggest`; the
only arithmetic here is the per-iteration mean and band over seeds that a curve
figure shows). Figures are drawn on matplotlib's Agg canvas directly, without
pyplot or a global backend switch, and written atomically as PNG through
:func:`superconv.records.atomic_write_bytes` (temp file in the same folder, then
rename), so a crash never leaves a half-written image.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from superconv.errors import UserError
from superconv.records import atomic_write_bytes

BANDS = ("minmax", "std")


def plot_range_test(
    curve: Any,
    suggestion: Any = None,
    *,
    path: str | os.PathLike,
    title: str | None = None,
    eval_name: str = "validation",
    marks: Mapping[str, float] | None = None,
    candidates: Sequence[float] = (),
    show_band: bool = True,
) -> Path:
    """Draw an LR range test (paper Fig. 2b and Fig. 4) to a PNG at ``path``.

    ``marks``: other rules' picks (rule name -> max_lr), drawn as labelled dashed
    lines, so that the chosen rule can be seen beside the familiar ones.
    ``candidates``: LRs marked by grey dashed lines (the max_lr values ``fit`` checks).
    ``show_band``: shade the suggestion's ``band`` (default) rather than nothing.

    ``eval_name`` names the evaluation set in the labels: a split name as range
    tests record it (``"val"`` is shown as "validation", ``"test"`` where the test
    set was used, as in the paper's figures) or any other label.

    Train loss (raw, faint, and smoothed) and validation loss against the LR on
    the left axis, validation accuracy on a twin axis; with a ``suggestion`` the
    band [min_lr, max_lr] is shaded and the plateau marked by a bar at the top
    of the accuracy axis. Log LR axis for ``mode="exp"`` curves. NaN/inf values
    (a diverged test) are left out of the lines.
    """
    eval_name = {"val": "validation"}.get(eval_name, eval_name)
    fig = _figure((7.0, 6.0))
    ax = fig.add_subplot()
    lrs = np.asarray(curve.lrs, dtype=float)
    smoothed = _draw_range_losses(ax, curve, lrs, eval_name)
    handles, labels = _clip_loss_axis(ax, smoothed, curve)
    bar_axis = _draw_range_accuracy(ax, curve, eval_name, handles, labels)
    if suggestion is not None:
        _draw_suggestion(ax, bar_axis, suggestion, show_band, handles, labels)
    _draw_lr_marks(ax, marks or {}, candidates, handles, labels)
    # Below the axes, not over the curve (a legend over the curve hid its end).
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small")
    ax.set_title(
        title
        or f"LR range test ({curve.mode}, {len(lrs)} of {curve.num_steps} steps; {curve.stop_reason})",
        fontsize="medium",
    )
    return _save(fig, path)


def _draw_range_losses(ax: Any, curve: Any, lrs: np.ndarray, eval_name: str) -> np.ndarray:
    """The train loss (raw, faint, and smoothed) and the evaluation loss against the LR;
    the smoothed train loss."""
    losses, smoothed = _finite(curve.losses), _finite(curve.smoothed_losses)
    ax.plot(lrs, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train loss")
    ax.plot(lrs, smoothed, color="tab:blue", lw=1.6, label="train loss (smoothed)")
    if curve.eval_lrs:
        ax.plot(
            curve.eval_lrs,
            _finite(curve.val_losses),
            "o-",
            color="tab:orange",
            ms=3,
            lw=1.2,
            label=f"{eval_name} loss",
        )
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if curve.mode == "exp":
        ax.set_xscale("log")
    return smoothed


def _clip_loss_axis(ax: Any, smoothed: np.ndarray, curve: Any) -> tuple[list, list]:
    """Keep a blow-up (the end of a diverged test, or one wild evaluation, as the bottleneck
    ResNet's 4e8 test loss in Fig. 11a) from flattening the rest of the figure: the axis
    ends at 1.5x the 95th percentile of the losses, and the points above it are counted
    in the legend. The legend's handles and labels so far."""
    shown = np.concatenate([smoothed, _finite(curve.val_losses)])
    shown = shown[np.isfinite(shown)]
    above = 0
    if shown.size and shown.max() > 0:
        top = min(float(shown.max()), 1.5 * float(np.percentile(shown, 95)))
        above = int((shown > top).sum())
        ax.set_ylim(min(0.0, float(shown.min())), 1.1 * top)
    handles, labels = ax.get_legend_handles_labels()
    if above:
        (off,) = ax.plot([], [], " ")
        handles.append(off)
        labels.append(f"{above} loss point(s) above the axis (max {shown.max():.3g})")
    return handles, labels


def _draw_range_accuracy(ax: Any, curve: Any, eval_name: str, handles: list, labels: list) -> Any:
    """The evaluation accuracy on a twin axis, if there is any; the axis the plateau bar
    goes on (the twin, else ``ax``)."""
    accs = _finite(curve.val_accs)
    if not np.isfinite(accs).any():
        return ax
    twin = ax.twinx()
    twin.plot(
        curve.eval_lrs,
        accs,
        "s-",
        color="tab:green",
        ms=3,
        lw=1.2,
        label=f"{eval_name} accuracy",
    )
    twin.set_ylabel(f"{eval_name} accuracy")
    h, lab = twin.get_legend_handles_labels()
    handles += h
    labels += lab
    return twin


def _draw_suggestion(
    ax: Any, bar_axis: Any, suggestion: Any, show_band: bool, handles: list, labels: list
) -> None:
    """The suggestion: its band shaded (if ``show_band``), max_lr, the plateau as a bar."""
    low, high = getattr(suggestion, "band", (suggestion.min_lr_ratio, suggestion.max_lr))
    if show_band:
        band = ax.axvspan(low, high, color="tab:red", alpha=0.12)
        handles.append(band)
        labels.append(f"band {low:.3g} .. {high:.3g} (within 2x of max_lr)")
    peak = ax.axvline(suggestion.max_lr, color="tab:red", lw=1.6)
    handles.append(peak)
    rule = getattr(suggestion, "rule", "")
    labels.append(
        f"max_lr {suggestion.max_lr:.3g} ({rule}), cycle from min_lr {suggestion.min_lr_ratio:.3g}"
    )
    lo, hi = suggestion.plateau
    (bar,) = bar_axis.plot(
        [lo, hi],
        [0.98, 0.98],
        transform=bar_axis.get_xaxis_transform(),
        color="tab:purple",
        lw=4,
        solid_capstyle="butt",
    )
    handles.append(bar)
    labels.append(f"plateau ({suggestion.signal}): {suggestion.plateau_width:.2f} decades")


def _draw_lr_marks(
    ax: Any, marks: Mapping[str, float], candidates: Sequence[float], handles: list, labels: list
) -> None:
    """Other rules' picks as labelled lines; the candidates as grey dashed ones."""
    styles = ("--", ":", "-.", (0, (5, 2, 1, 2)))
    for i, (name, lr) in enumerate(sorted(marks.items(), key=lambda kv: kv[1])):
        line = ax.axvline(lr, color="0.35", lw=1.0, ls=styles[i % len(styles)])
        handles.append(line)
        labels.append(f"{name}: {lr:.3g}")
    for i, lr in enumerate(candidates):
        line = ax.axvline(float(lr), color="tab:gray", ls="--", lw=1.0)
        if i == 0:
            handles.append(line)
            labels.append("candidates: " + ", ".join(f"{c:.3g}" for c in candidates))


def plot_schedule(
    policy: Mapping[str, Callable[[int], float]],
    total_steps: int,
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Draw a training policy (name -> schedule of the step) over ``total_steps`` to ``path``.

    ``lr`` goes on the left axis; every other entry (``momentum``, ...) on a twin
    right axis. At most 2,000 evenly spaced steps are drawn.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise UserError(f"total_steps must be an integer >= 1, got {total_steps!r}.")
    if not policy:
        raise UserError("policy is empty: nothing to plot (give e.g. {'lr': schedule}).")
    steps = np.unique(np.linspace(0, total_steps - 1, min(total_steps, 2000)).round().astype(int))
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_xlabel("iteration")
    twin = None
    handles = []
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"])
    for name, schedule in policy.items():
        values = [float(schedule(int(s))) for s in steps]
        if name == "lr":
            target = ax
        else:
            twin = twin or ax.twinx()
            target = twin
        (line,) = target.plot(steps, values, color=next(colors, "black"), lw=1.6, label=name)
        handles.append(line)
    ax.set_ylabel("learning rate" if "lr" in policy else "")
    if twin is not None:
        twin.set_ylabel(", ".join(name for name in policy if name != "lr"))
    # One legend for both axes, above the plot: "best" would ignore the twin's lines.
    ax.legend(
        handles,
        [h.get_label() for h in handles],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(handles),
        fontsize="small",
        frameon=False,
    )
    ax.set_title(title or f"policy over {total_steps} iterations", fontsize="medium", pad=20)
    return _save(fig, path)


def plot_estimates(
    series: Mapping[str, Sequence[Sequence[float]]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Draw eq. 8 LR estimates against the iteration, one run per entry (paper Fig. 5).

    ``series`` maps a run name to its ``LREstimator.history``: ``(step, raw,
    smoothed)`` rows. The raw estimate is drawn faint, the moving average solid.
    """
    if not series:
        raise UserError("series is empty: give at least one run's (step, raw, smoothed) history.")
    fig = _figure()
    ax = fig.add_subplot()
    for i, (name, rows) in enumerate(series.items()):
        color = f"C{i % 10}"
        rows = np.asarray(rows, dtype=float).reshape(-1, 3)
        ax.plot(rows[:, 0], _finite(rows[:, 1]), color=color, alpha=0.25, lw=0.8)
        ax.plot(
            rows[:, 0], _finite(rows[:, 2]), color=color, lw=1.6, label=f"{name} (moving average)"
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("estimated learning rate (eq. 8)")
    # The raw estimate spans decades (a near-zero weight change gives a huge one): log axis.
    values = np.concatenate(
        [np.asarray(r, dtype=float).reshape(-1, 3)[:, 1:].ravel() for r in series.values()]
    )
    values = values[np.isfinite(values)]
    if values.size and (values > 0).all():
        ax.set_yscale("log")
    elif values.size:
        ax.set_yscale("symlog", linthresh=max(1e-3, float(np.percentile(np.abs(values), 5))))
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or "Hessian-free LR estimate (faint: raw)", fontsize="medium")
    return _save(fig, path)


def mean_band(
    values: Sequence[np.ndarray], band: str = "std"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) of each group of values: the band is min..max (``"minmax"``)
    or mean -+ the sample standard deviation (``"std"``, ddof=1 as the report's
    tables; zero width for a single value)."""
    mean = np.array([v.mean() for v in values])
    if band == "minmax":
        return mean, np.array([v.min() for v in values]), np.array([v.max() for v in values])
    std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
    return mean, mean - std, mean + std


# Axis labels for metrics.csv columns; other column names are shown as they are.
AXIS_LABELS = {
    "iteration": "iteration",
    "iterations_with_tuning": "training iterations, tuning included",
    "epoch": "epoch",
    "test_acc": "test accuracy (%)",
    "val_acc": "validation accuracy (%)",
    "train_acc": "training accuracy (%)",
    "test_loss": "test loss",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "lr": "learning rate",
    "momentum": "momentum",
}


def plot_curves(
    runs: Mapping[str, Iterable[Mapping[str, Any]]],
    y: str = "test_acc",
    *,
    path: str | os.PathLike,
    x: str = "iteration",
    band: str = "minmax",
    title: str | None = None,
) -> Path:
    """Draw metric ``y`` against ``x`` for several policies, mean over seeds with a band.

    ``runs`` maps a policy name to metric rows (dicts, e.g. ``metrics.csv`` rows of
    all its seeds pooled together). Rows are grouped by their ``x`` value; the line
    is the mean of ``y`` at each ``x`` and the band its min..max (``band="minmax"``)
    or mean +- one standard deviation (``band="std"``). Rows without a finite
    ``y`` are skipped.
    """
    if band not in BANDS:
        raise UserError(f"band must be one of {', '.join(BANDS)}, got {band!r}.")
    if not runs:
        raise UserError("runs is empty: give at least one policy's metric rows.")
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for i, (name, rows) in enumerate(runs.items()):
        groups: dict[float, list[float]] = {}
        for row in rows:
            xv, yv = _number(row.get(x)), _number(row.get(y))
            if xv is not None and yv is not None:
                groups.setdefault(xv, []).append(yv)
        if not groups:
            continue
        xs = np.array(sorted(groups))
        values = [np.array(groups[k]) for k in xs]
        mean, low, high = mean_band(values, band)
        seeds = max(len(v) for v in values)
        color = f"C{i % 10}"
        ax.plot(xs, mean, color=color, lw=1.6, label=f"{name} (n={seeds})")
        ax.fill_between(xs, low, high, color=color, alpha=0.2, lw=0)
        drawn += 1
    if not drawn:
        raise UserError(f"no run has finite values of {y!r} against {x!r}: check the column names.")
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    ax.legend(loc="best", fontsize="small")
    ax.set_title(
        title or f"{y}: mean over seeds, band = {'min..max' if band == 'minmax' else '+-1 std'}",
        fontsize="medium",
    )
    return _save(fig, path)


def plot_run_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    policy: Mapping[str, Callable[[int], float]] | None = None,
    total_steps: int | None = None,
) -> Path:
    """Loss and accuracy (train, validation, test) against the iteration, with the LR
    and momentum schedule beneath: ``curves.png`` of a run, or several runs overlaid.

    ``runs`` maps a run's label to its ``metrics.csv`` rows. One run: a colour per
    split; several: a colour per run, a line style per split (train solid,
    validation dashed, test dotted). The LR is drawn from ``policy`` (name ->
    schedule of the step) over ``total_steps`` where given, else from the rows (the
    value at each evaluation); momentum on a twin axis.
    """
    if not runs:
        raise UserError("runs is empty: give at least one run's metric rows.")
    fig = _figure((7.5, 8.0))
    loss_ax, acc_ax, lr_ax = fig.subplots(3, 1, sharex=True, height_ratios=(2, 2, 1.2))
    single = len(runs) == 1
    mom_ax = None
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        _draw_run_metrics(loss_ax, acc_ax, rows, label if not single else None, color)
        mom_ax = _draw_run_schedule(
            lr_ax, mom_ax, rows, label if not single else None, color, policy, total_steps
        )
    _label_run_axes(loss_ax, acc_ax, lr_ax, mom_ax, single)
    loss_ax.set_title(title or "training curves", fontsize="medium")
    return _save(fig, path)


_SPLIT_STYLES = {"train": "-", "val": "--", "test": ":"}
_SPLIT_COLORS = {"train": "C0", "val": "C1", "test": "C2"}


def _draw_run_metrics(
    loss_ax: Any, acc_ax: Any, rows: Sequence[Mapping[str, Any]], label: str | None, color: str
) -> None:
    """One run's loss and accuracy per split. ``label``: the run's, when several are
    overlaid (a colour per run); None for a single run (a colour per split)."""
    single = label is None
    for split in ("train", "val", "test"):
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
            pts = [(_number(r.get("iteration")), _number(r.get(f"{split}_{metric}"))) for r in rows]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            name = split if single else f"{label} {split}"
            ax.plot(
                xs,
                ys,
                _SPLIT_STYLES[split],
                color=_SPLIT_COLORS[split] if single else color,
                lw=1.5,
                label=name if metric == "loss" else None,
                marker="." if len(xs) < 30 else None,
            )


def _draw_run_schedule(
    lr_ax: Any,
    mom_ax: Any,
    rows: Sequence[Mapping[str, Any]],
    label: str | None,
    color: str,
    policy: Mapping[str, Callable[[int], float]] | None,
    total_steps: int | None,
) -> Any:
    """One run's LR (and momentum on a twin axis, made on first use; returned): from
    ``policy`` over ``total_steps`` where given, else from the rows."""
    single = label is None
    for key, axis in (("lr", lr_ax), ("momentum", None)):
        pts = [(_number(r.get("iteration")), _number(r.get(key))) for r in rows]
        if policy is not None and total_steps and key in policy:
            grid = np.unique(np.linspace(0, total_steps - 1, min(total_steps, 1000)))
            pts = [(int(t) + 1, float(policy[key](int(t)))) for t in grid.round()]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        if not pts:
            continue
        if axis is None:
            mom_ax = mom_ax or lr_ax.twinx()
            axis = mom_ax
        xs, ys = zip(*pts)
        axis.plot(
            xs,
            ys,
            "-" if key == "lr" else "--",
            color=(("C3" if key == "lr" else "C4") if single else color),
            lw=1.2,
            drawstyle="steps-post",
            label=(key if single else f"{label} {key}"),
        )
    return mom_ax


def _label_run_axes(loss_ax: Any, acc_ax: Any, lr_ax: Any, mom_ax: Any, single: bool) -> None:
    """Axis labels, a log loss axis for a blown-up loss, legends and grids."""
    loss_ax.set_ylabel("loss")
    finite = [
        y
        for line in loss_ax.get_lines()
        for y in np.asarray(line.get_ydata(), dtype=float)
        if np.isfinite(y) and y > 0
    ]
    if finite and max(finite) / min(finite) > 100:  # a blown-up loss: a log axis shows both
        loss_ax.set_yscale("log")
    acc_ax.set_ylabel("accuracy (%)")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("iteration")
    if mom_ax is not None:
        mom_ax.set_ylabel("momentum")
    loss_ax.legend(loc="upper right", fontsize="small", ncol=1 if single else 2)
    handles = lr_ax.get_lines() + (mom_ax.get_lines() if mom_ax is not None else [])
    lr_ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize="small")
    for ax in (loss_ax, acc_ax, lr_ax):
        ax.grid(alpha=0.3)


def plot_by_size(
    series: Mapping[str, Mapping[int, Sequence[float]]],
    *,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Final test accuracy against the number of training images (the paper's Fig. 6a).

    ``series`` maps a policy name to ``{training images: final accuracies of its
    seeds}``; each point is the mean, its error bar +-1 sample standard deviation
    (none for a single seed). Non-finite accuracies are skipped.
    """
    if not series:
        raise UserError("series is empty: give at least one policy's accuracies by size.")
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for i, (name, by_size) in enumerate(series.items()):
        sizes = sorted(n for n, accs in by_size.items() if np.isfinite(_finite(accs)).any())
        if not sizes:
            continue
        values = [_finite(by_size[n]) for n in sizes]
        values = [v[np.isfinite(v)] for v in values]
        mean, low, _ = mean_band(values, "std")
        seeds = max(len(v) for v in values)
        ax.errorbar(
            sizes, mean, yerr=mean - low, color=f"C{i % 10}", marker="o", lw=1.6, capsize=3,
            label=f"{name} (n≤{seeds})",
        )  # fmt: skip
        drawn += 1
    if not drawn:
        raise UserError("no policy has a finite accuracy at any training-set size.")
    ax.set_xscale("log")
    ax.set_xticks(sorted({n for s in series.values() for n in s}))
    ax.xaxis.set_major_formatter(_thousands())
    ax.xaxis.set_minor_formatter(_no_label())
    ax.set_xlabel("training images")
    ax.set_ylabel(AXIS_LABELS["test_acc"])
    ax.legend(loc="best", fontsize="small")
    ax.set_title(
        title or "final test accuracy vs training-set size: mean, bar ± 1 std", fontsize="medium"
    )
    return _save(fig, path)


def plot_candidates(
    trials: Sequence[Any],
    *,
    chosen: float | None,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Draw the short-run scores of ``fit``'s check: score against max_lr, one line per rung.

    ``trials``: objects with ``lr``, ``rung``, ``iterations`` and ``score``
    (``None`` for a diverged run, drawn as an x at the bottom of the axis).
    """
    if not trials:
        raise UserError("trials is empty: nothing to plot.")
    fig = _figure()
    ax = fig.add_subplot()
    scores = [t.score for t in trials if t.score is not None]
    floor = min(scores) if scores else 0.0
    for rung in sorted({t.rung for t in trials}):
        mine = sorted((t for t in trials if t.rung == rung), key=lambda t: t.lr)
        ok = [t for t in mine if t.score is not None]
        color = f"C{rung % 10}"
        ax.plot(
            [t.lr for t in ok],
            [t.score for t in ok],
            "o-",
            color=color,
            label=f"rung {rung}: {mine[0].iterations} iterations",
        )
        bad = [t.lr for t in mine if t.score is None]
        if bad:
            ax.plot(bad, [floor] * len(bad), "x", color=color, ms=9, label=f"rung {rung}: diverged")
    if chosen is not None:
        ax.axvline(chosen, color="tab:red", lw=1.2, label=f"chosen max_lr {chosen:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("max_lr of the candidate 1cycle")
    ax.set_ylabel("validation score (accuracy %, or -loss)")
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or "check: successive halving, fresh short 1cycles", fontsize="medium")
    return _save(fig, path)


def plot_suggestions(
    points: Sequence[tuple[str, str, float, float]], path: str | os.PathLike
) -> Path:
    """Log-log plot of suggested max_lr against each task's swept best: one marker per curve.

    ``points``: ``(rule label, task, best max_lr, suggested max_lr)``. The diagonal
    is a perfect suggestion; the grey band is the benchmark's factor-2 tolerance.
    """
    fig = _figure((6.5, 5.5))
    ax = fig.add_subplot()
    labels = sorted({p[0] for p in points})
    markers = "osD^v<>P*X"
    for i, label in enumerate(labels):
        mine = [p for p in points if p[0] == label]
        ax.scatter(
            [p[2] for p in mine],
            [p[3] for p in mine],
            label=label,
            marker=markers[i % len(markers)],
            alpha=0.6,
            s=28,
        )
    values = [v for p in points for v in (p[2], p[3]) if v > 0]
    if values:
        lo, hi = min(values) / 2, max(values) * 2
        line = np.array([lo, hi])
        ax.plot(line, line, color="black", lw=1, label="suggestion = best")
        ax.fill_between(line, line / 2, line * 2, color="grey", alpha=0.2, label="within 2x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("best max_lr of the task's 1cycle sweep (validation accuracy)")
    ax.set_ylabel("suggested max_lr")
    ax.set_title("Suggestion vs swept best, one marker per task and range test")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def wrap_title(text: str, width: int = 80) -> str:
    """Break a long figure title in two at a word boundary."""
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width)
    return text[:cut] + "\n" + text[cut + 1 :] if cut > 0 else text


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v / 1000:g}k")


def _no_label():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def _figure(size: tuple[float, float] = (7.0, 4.5)):
    # The Agg canvas, chosen here rather than at import time and without pyplot's global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write_bytes(path, buf.getvalue())


def _finite(values: Iterable[float]) -> np.ndarray:
    """As floats, with NaN/inf/None as NaN (matplotlib leaves gaps at NaN)."""
    out = np.array([math.nan if v is None else v for v in values], dtype=float)
    out[~np.isfinite(out)] = math.nan
    return out


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
