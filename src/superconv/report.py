"""Run directories -> a Markdown report with the paper's numbers beside ours, and its plots.

:func:`write_report` reads only what runs left on disk (``config.json``,
``summary.json``, ``metrics.csv``, ``estimates.csv``, ``range_test.json``, and
the results folder's ``manifest.json`` when present); it never trains. It
writes ``report.md`` and PNG figures under ``plots/`` beside it, and gives the
same Markdown each time it is run on the same run directories.

Layout read: ``RESULTS_DIR/<row>/seed<k>/`` run directories, as
:func:`superconv.runner.reproduce` writes them under
``out/<experiment>/<scale>/``. When the folder belongs to a registered
experiment (its manifest, or the path ``.../<experiment>/<scale>``), rows
follow the experiment's plan and carry the paper's and the authors'-log
numbers; any other folder of run directories gets the same tables without
them.

Statistics: mean and sample standard deviation (``ddof=1``) of the final test
accuracy over the seeds whose run finished; ``n`` counts them. Diverged seeds
are reported as such, never averaged in.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superconv.errors import UserError
from superconv.plan import Fit, RangeTest, Sweep, Train, pick_best, rule_label
from superconv.records import atomic_write_text
from superconv.runs import (
    MANIFEST_FILE,
    RunRecord,
    fit_tuning_cost,
    read_json,
    read_run,
    read_table,
    scan,
    tuning_cost,
)

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
_DASH = "—"


# ----------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 (NaN for one value), n) of the finite ``values``."""
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if xs.size == 0:
        return math.nan, math.nan, 0
    std = float(xs.std(ddof=1)) if xs.size > 1 else math.nan
    return float(xs.mean()), std, int(xs.size)


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``"92.41 ± 0.13"`` (one value: ``"92.41"``; none: an em dash)."""
    mean, std, n = mean_std(values)
    if n == 0:
        return _DASH
    if n == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _num(value: Any, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _DASH
    return format(value, fmt)


# ----------------------------------------------------------------------------- the experiment
@dataclass
class _Context:
    root: Path
    manifest: dict[str, Any]
    experiment: Any  # superconv.plan.Experiment or None
    plan: Any  # superconv.plan.Plan or None
    scale: str
    seeds: int | None  # seeds asked for by the last call (None: unknown)


def _context(root: Path) -> _Context:
    from superconv import paper

    manifest = read_json(root / MANIFEST_FILE) or {}
    exp_id = manifest.get("experiment") or root.parent.name
    scale = manifest.get("scale") or root.name
    experiment = paper.experiments().get(exp_id)
    plan = experiment.plan(scale) if experiment is not None and scale in paper.SCALES else None
    if plan is None:
        experiment = None
    return _Context(
        root,
        manifest,
        experiment,
        plan,
        scale if scale in paper.SCALES else _DASH,
        manifest.get("seeds"),
    )


def _planned_seeds(ctx: _Context, step: Any) -> int | None:
    if ctx.seeds is None:
        return None
    limit = getattr(step, "seeds", None)
    return ctx.seeds if limit is None else min(limit, ctx.seeds)


@dataclass
class _Layout:
    """A results folder's rows in report order, split by kind."""

    steps: dict[str, Any]  # plan step name -> step
    sweeps: list[Any]
    tests: list[Any]  # planned RangeTest steps
    planned: list[Any]  # planned Train steps
    train_rows: list[str]
    test_rows: list[str]
    estimate_rows: list[str]


def _layout(root: Path, rows: dict[str, list[RunRecord]], ctx: _Context) -> _Layout:
    plan_steps = list(ctx.plan.steps) if ctx.plan is not None else []
    sweeps = [s for s in plan_steps if isinstance(s, Sweep)]
    trial_rows = {t.name: s for s in sweeps for t in s.trials()}
    planned_tests = [s for s in plan_steps if isinstance(s, RangeTest)]
    planned_rows = [s for s in plan_steps if isinstance(s, (Train, Fit))]
    planned_names = {s.name for s in plan_steps} | set(trial_rows)
    extra = [name for name in rows if name not in planned_names]
    test_rows = [s.name for s in planned_tests] + [
        n for n in extra if any(r.range_test is not None for r in rows[n])
    ]
    train_rows = [s.name for s in planned_rows] + [n for n in extra if n not in test_rows]
    estimates = [n for n in train_rows if any(r.estimates for r in rows.get(n, []))]
    return _Layout(
        {s.name: s for s in plan_steps},
        sweeps,
        planned_tests,
        planned_rows,
        train_rows,
        test_rows,
        estimates,
    )


# ----------------------------------------------------------------------------- the report
def write_report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md`` (and ``plots/*.png`` beside it) for the run directories in ``results_dir``.

    ``out``: the Markdown file (default ``results_dir/report.md``). Reads run
    directories only; returns the path written.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder of results: give the folder reproduce wrote.")
    rows = scan(root)
    ctx = _context(root)
    if not rows and ctx.plan is None:
        raise UserError(
            f"no run directories (<row>/seed<k>/config.json) under {root}: nothing to report."
        )
    out = Path(out) if out is not None else root / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = out.parent / PLOTS_DIR
    made = not plots.exists()
    plots.mkdir(exist_ok=True)
    try:
        return _write_report(root, out, rows, ctx, plots)
    except BaseException:
        if made:  # a report that failed half-way leaves no partial plots/ behind
            shutil.rmtree(plots, ignore_errors=True)
        raise


def _write_report(root: Path, out: Path, rows, ctx: _Context, plots: Path) -> Path:

    lay = _layout(root, rows, ctx)
    steps, sweeps, planned_tests, planned_rows = lay.steps, lay.sweeps, lay.tests, lay.planned
    train_rows, test_rows = lay.train_rows, lay.test_rows

    lines = _header(ctx)
    lines += _results_table(ctx, train_rows, steps, rows)
    tuning_tests = [
        t for t in planned_tests if any(u.source == t.name for s in planned_rows for u in s.tuned)
    ]
    if sweeps or tuning_tests:
        lines += _tuning_section(ctx, sweeps, tuning_tests, planned_rows, rows)
    if test_rows:
        lines += _range_section(ctx, test_rows, steps, rows)
    estimates = lay.estimate_rows
    if estimates:
        lines += _estimates_section(ctx, estimates, steps, rows)
    lines += _comparison_section(ctx, train_rows, rows, plots, out.parent)
    lines += _cost_section(ctx, lay, rows, plots, out.parent)
    lines += _fit_targets_section(lay, rows)
    lines += _size_section(train_rows, rows, plots, out.parent)
    lines += _plots_section(ctx, train_rows, test_rows, estimates, rows, plots, out.parent)
    lines += [
        "",
        "---",
        "Mean ± sample standard deviation (ddof=1) over the seeds whose run finished; n = that "
        "count. Paper = the number printed in the paper (or the cited notes), log = the final "
        "test accuracy in the authors' released raw logs; ours − paper = our mean minus the "
        "paper's number. Regenerate with `superconv report <this folder>` (it reads the run "
        "directories only).",
        "",
    ]
    return atomic_write_text(out, "\n".join(lines))


def _header(ctx: _Context) -> list[str]:
    exp, lines = ctx.experiment, []
    if exp is not None:
        lines += [
            f"# {exp.title} — {ctx.scale} scale",
            "",
            f"- Experiment `{exp.id}` ({exp.paper_item}).",
            f"- The paper's claim: {exp.claim}",
        ]
    else:
        lines += [f"# Results in {ctx.root.name}", ""]
    invocations = ctx.manifest.get("invocations", [])
    if invocations:
        lines += ["", "## How these runs were made", ""]
        for inv in invocations:
            ended = inv.get("finished") or "never (killed or failed)"
            estimate = inv.get("estimated_seconds")
            lines.append(
                f"- `{inv.get('command', '')}` = `{inv.get('call', '')}`: commit "
                f"`{inv.get('commit', '?')}`, device {inv.get('device', '?')} "
                f"({inv.get('device_name', '?')}), {inv.get('seeds', '?')} seed(s), started "
                f"{inv.get('started', '?')}, finished {ended}"
                + (f"; estimated {_duration(estimate)} beforehand" if estimate is not None else "")
                + "."
            )
    if ctx.plan is not None and ctx.plan.notes:
        lines += ["", "## Settings at this scale", ""]
        lines += [f"- {note}" for note in ctx.plan.notes]
    return lines


def _finished(runs: Iterable[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status == "finished"]


def _values(runs: Iterable[RunRecord], key: str) -> list[float]:
    return [r.summary[key] for r in _finished(runs) if r.summary.get(key) is not None]


def _status_notes(ctx: _Context, step: Any, runs: Sequence[RunRecord]) -> list[str]:
    notes = []
    diverged = [r for r in runs if r.status == "diverged"]
    unfinished = [r for r in runs if r.status == "unfinished"]
    if diverged:
        where = ", ".join(
            f"seed {r.seed} at iteration {r.summary.get('iterations')} "
            f"(lr {_num(r.summary.get('diverged_lr'), '.3g')})"
            for r in diverged
        )
        notes.append(f"**DIVERGED** in {len(diverged)} of {len(runs)} seeds: {where}")
    if unfinished:
        notes.append(
            f"{len(unfinished)} seed(s) unfinished ({', '.join(str(r.seed) for r in unfinished)})"
        )
    planned = _planned_seeds(ctx, step) if step is not None else None
    ended = len(runs) - len(unfinished)  # a seed still training has not "run" yet
    if planned is not None and ended < planned:
        notes.append(f"**only {ended} of {planned} planned seeds** ran")
    return notes


def _tuned_notes(step: Any, runs: Sequence[RunRecord]) -> list[str]:
    if step is None or not getattr(step, "tuned", ()) or not runs:
        return []
    params = runs[0].config.get("policy_params", {})
    return [
        f"{t.param} = {_num(params.get(t.param), '.4g')} from {t.source}"
        + ("" if t.field == "best" else f" ({t.field})")
        for t in step.tuned
    ]


def _results_table(ctx, names, steps, rows) -> list[str]:
    if not names:
        return []
    show_val = any(_values(rows.get(n, []), "final_val_acc") for n in names)
    head, body, sources = _results_rows(ctx, names, steps, rows, show_val)
    lines = ["", "## Results: final test accuracy", "", _row(head), _row(["---"] * len(head))]
    lines += [_row(cells) for cells in body]
    if sources:
        lines += ["", "Sources of the published numbers: " + "; ".join(sources) + "."]
    return lines


def _results_rows(ctx, names, steps, rows, show_val: bool):
    """(header, one list of cells per row, sources of the published numbers)."""
    head = ["row", "scale", "model", "iterations", "n", "test acc % (mean ± std)"]
    head += ["val acc %"] if show_val else []
    head += ["paper", "authors' log", "ours − paper", "time / seed", "notes"]
    body, sources = [], []
    for name in names:
        runs, step = rows.get(name, []), steps.get(name)
        ref = getattr(step, "ref", None)
        config = runs[0].config if runs else (step.config.to_dict() if step else {})
        accs = _values(runs, "final_test_acc")
        mean, _, n = mean_std(accs)
        paper = ref.paper if ref is not None else None
        log = ref.log if ref is not None else None
        diff = f"{mean - paper:+.2f}" if paper is not None and n else _DASH
        notes = _status_notes(ctx, step, runs) + _tuned_notes(step, runs)
        if not runs:
            notes.insert(0, "not run yet")
        if step is not None and step.note:
            notes.append(step.note)
        cells = [
            f"`{name}`",
            ctx.scale,
            str(config.get("model", _DASH)),
            f"{config.get('iterations', _DASH):,}" if config else _DASH,
            str(n),
            format_mean_std(accs)
            if n
            else ("diverged" if runs and all(r.status == "diverged" for r in runs) else _DASH),
        ]
        if show_val:
            cells.append(format_mean_std(_values(runs, "final_val_acc")))
        wall = mean_std(_values(runs, "wall_time"))[0]
        cells += [
            _num(paper),
            _num(log),
            diff,
            _duration(wall),
            "; ".join(notes),
        ]
        body.append(cells)
        if ref is not None and ref.source:
            sources.append(f"`{name}`: {ref.source}")
    return head, body, sources


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return _DASH
    from superconv.timing import format_duration

    return format_duration(seconds)


def _tuning_section(ctx, sweeps, tests, planned_rows, rows) -> list[str]:
    lines = ["", "## Tuning (on the validation split; the test set is never used to choose)"]
    for test in tests:
        runs = [r for r in rows.get(test.name, []) if r.range_test is not None]
        for (rule, budget), readers in _readings(test, planned_rows).items():
            users = list(dict.fromkeys(name for name, _ in readers))
            fields = sorted({field for _, field in readers})
            values = _test_values(rule, budget, runs[0].range_test) if runs else None
            if isinstance(values, dict):
                picked = ", ".join(f"{f} = {values[f]:.4g}" for f in fields)
                if rule is not None:
                    picked += f" (rule {rule_label(rule)} for a {budget:,}-iteration budget)"
            else:
                picked = values or "no suggestion yet"
            lines += [
                "",
                f"- Range test `{test.name}` (seed 0, evaluated on the {test.evaluate_on} split): "
                f"{picked}, used by {', '.join(f'`{u}`' for u in users)}. {_cost_text(runs)}",
            ]
    for sweep in sweeps:
        head = [
            sweep.param,
            "n",
            "val acc % (mean ± std)",
            "test acc % (not used to pick)",
            "notes",
        ]
        lines += [
            "",
            f"### `{sweep.name}`: {sweep.config.policy}, {sweep.config.iterations:,} iterations, "
            f"{sweep.config.val_size:,} validation images",
            "",
            _row(head),
            _row(["---"] * len(head)),
        ]
        scores, trials, missing = {}, [], []
        for value in sweep.values:
            runs = rows.get(sweep.trial(value).name, [])
            scores[value] = _values(runs, "final_val_acc")
            if all(r.status == "unfinished" for r in runs):  # diverged runs did end
                missing.append(value)
            trials += runs
            status = "; ".join(_status_notes(ctx, sweep, runs)) or (
                "not run yet" if not runs else ""
            )
            lines.append(
                _row(
                    [
                        f"{value:g}",
                        str(len(scores[value])),
                        format_mean_std(scores[value]),
                        format_mean_std(_values(runs, "final_test_acc")),
                        status,
                    ]
                )
            )
        if len(missing) == len(sweep.values):
            picked = "no pick: not run yet: no value of the sweep has a finished run"
        else:
            picked = _pick_text(sweep, scores, missing)
        lines += ["", f"{picked}. {_cost_text(trials)}"]
    return lines


def _readings(test: Any, planned_rows: Sequence[Any]) -> dict[Any, list[tuple[str, str]]]:
    """How the planned rows read ``test``: (rule, budget) -> [(row, field)], a row's own
    rule (:class:`~superconv.plan.Tuned`) before the test's, as the runner reads them."""
    out: dict[Any, list[tuple[str, str]]] = {}
    for row in planned_rows:
        for t in row.tuned:
            if t.source == test.name:
                out.setdefault(t.reading(test), []).append((row.name, t.field))
    return out


def _test_values(rule: Any, budget: int | None, data: dict[str, Any]) -> dict[str, float] | str | None:
    """The values rows take from a range test, read as the runner reads them
    (:func:`superconv.suggest.range_test_values`); a str says why a rule gave none."""
    from superconv.suggest import range_test_values

    try:
        return range_test_values(data, rule, budget)
    except UserError as exc:
        return f"no suggestion by rule {rule[0]!r}: {str(exc).rstrip('.')}"


def _pick_text(sweep: Any, scores: dict[float, list[float]], missing: list[float]) -> str:
    """What the report says of a sweep's pick (some of its values have ended runs)."""
    try:
        best = pick_best(scores)
    except UserError as exc:  # every ended trial diverged
        return f"no pick: {str(exc).rstrip('.')}"
    if missing:
        picked = (
            f"**best so far {sweep.param} = {best:g}** (provisional: "
            f"{len(missing)} of {len(sweep.values)} values have no finished run yet)"
        )
    else:
        picked = f"**picked {sweep.param} = {best:g}**"
    if best in (sweep.values[0], sweep.values[-1]) and len(sweep.values) > 1:
        picked += " (at the edge of the grid: the best value may lie outside it)"
    return picked


def _cost_text(runs: Iterable[RunRecord]) -> str:
    cost = tuning_cost(runs)
    text = (
        f"Tuning cost: {cost['runs']} run(s), {cost['iterations']:,} iterations, "
        f"{cost['images']:,} training images"
    )
    if cost["unfinished"]:
        text += f" (not counted: {cost['unfinished']} run(s) in progress or killed)"
    return text + "."


def _nearest(xs: Sequence[float], ys: Sequence[float], target: float) -> float | None:
    """y at the x nearest ``target`` if the x lies within 10% of it, else None."""
    best = None
    for x, y in zip(xs, ys):
        if x is None or y is None or not math.isfinite(y):
            continue
        if best is None or abs(x - target) < abs(best[0] - target):
            best = (x, y)
    if best is None or abs(best[0] - target) > 0.1 * target:
        return None
    return best[1]


def _range_section(ctx, names, steps, rows) -> list[str]:
    head, body = _range_rows(ctx, names, steps, rows)
    lines = ["", "## LR range tests", "", _row(head), _row(["---"] * len(head))]
    lines += [_row(cells) for cells in body]
    lines += [
        "",
        "Losses at LR 0.2 and 2.0 are read at the recorded point nearest each LR (within 10%; "
        "— when the test did not get there): the paper's Fig. 4 regularization evidence is a "
        "train loss that rises while the evaluation loss falls between them.",
    ]
    return lines


def _range_rows(ctx, names, steps, rows):
    """(header, one list of cells per range-test row)."""
    head = [
        "row",
        "model",
        "evaluated on",
        "steps run / planned",
        "n",
        "stopped",
        "suggested max_lr",
        "min_lr (max/4)",
        "plateau (decades)",
        "train loss at LR 0.2 → 2.0",
        "eval loss at LR 0.2 → 2.0",
        "notes",
    ]
    body = []
    for name in names:
        runs, step = rows.get(name, []), steps.get(name)
        tests = [r for r in runs if r.range_test is not None]
        config = runs[0].config if runs else (step.config.to_dict() if step else {})
        spec = config.get("range_test", {})
        sugg = [r.range_test.get("suggestion") for r in tests]
        sugg = [s for s in sugg if s]
        curves = [r.range_test["curve"] for r in tests]
        run_steps = ", ".join(str(len(c["losses"])) for c in curves) or _DASH
        stops = sorted({c["stop_reason"] for c in curves})
        train_pair = [
            (
                _nearest(c["lrs"], c["smoothed_losses"], 0.2),
                _nearest(c["lrs"], c["smoothed_losses"], 2.0),
            )
            for c in curves
        ]
        eval_pair = [
            (
                _nearest(c["eval_lrs"], c["val_losses"], 0.2),
                _nearest(c["eval_lrs"], c["val_losses"], 2.0),
            )
            for c in curves
        ]
        notes = _status_notes(ctx, step, runs)
        if not runs:
            notes.insert(0, "not run yet")
        notes += [
            f"seed {r.seed}: no suggestion ({r.range_test.get('no_suggestion')})"
            for r in tests
            if not r.range_test.get("suggestion")
        ]
        if step is not None and step.note:
            notes.append(step.note)
        body.append(
            [
                f"`{name}`",
                str(config.get("model", _DASH)),
                str(spec.get("evaluate_on", _DASH)),
                f"{run_steps} / {spec.get('num_steps', config.get('iterations', _DASH))}",
                str(len(tests)),
                "; ".join(stops) or _DASH,
                format_mean_std([s["max_lr"] for s in sugg], 3),
                format_mean_std([s["min_lr_ratio"] for s in sugg], 3),
                format_mean_std([s["plateau_width"] for s in sugg], 2),
                _pairs(train_pair),
                _pairs(eval_pair),
                "; ".join(notes),
            ]
        )
    return head, body


def _pairs(pairs: Sequence[tuple[float | None, float | None]]) -> str:
    a = [p[0] for p in pairs if p[0] is not None]
    b = [p[1] for p in pairs if p[1] is not None]
    if not a and not b:
        return _DASH
    return f"{format_mean_std(a, 3)} → {format_mean_std(b, 3)}"


def _estimates_section(ctx, names, steps, rows) -> list[str]:
    head, body = _estimate_rows(ctx, names, steps, rows)
    lines = [
        "",
        "## Hessian-free LR estimate (eq. 8)",
        "",
        _row(head),
        _row(["---"] * len(head)),
    ]
    return lines + [_row(cells) for cells in body]


def _estimate_rows(ctx, names, steps, rows):
    """(header, one list of cells per row with eq. 8 estimates)."""
    window = ctx.plan.estimates_window if ctx.plan is not None else None
    head = ["row", "k", "estimates / seed", "n", "smoothed estimate at end", "max smoothed"]
    head += [f"mean smoothed, first {window} it"] if window else []
    head += ["paper"]
    body = []
    for name in names:
        runs = [r for r in rows[name] if r.estimates]
        step = steps.get(name)
        last = [r.estimates[-1]["smoothed"] for r in runs]
        peak = [max(e["smoothed"] for e in r.estimates if e["smoothed"] is not None) for r in runs]
        cells = [
            f"`{name}`",
            str(runs[0].config.get("estimator_k", _DASH)),
            ", ".join(str(len(r.estimates)) for r in runs),
            str(len(runs)),
            format_mean_std(last, 3),
            format_mean_std(peak, 3),
        ]
        if window:
            early = [
                float(np.mean([e["smoothed"] for e in r.estimates if e["iteration"] < window]))
                for r in runs
                if any(e["iteration"] < window for e in r.estimates)
            ]
            cells.append(format_mean_std(early, 3))
        cells.append(step.note if step is not None and step.note else _DASH)
        body.append(cells)
    return head, body


# ----------------------------------------------------------------------------- equal budgets
CYCLIC = ("one_cycle", "clr")  # the policies the comparison is about


def _budget_key(config: dict[str, Any]) -> tuple[int, int | None]:
    return int(config.get("iterations") or 0), config.get("train_subset")


def _budget_groups(
    train_rows: Sequence[str], rows
) -> list[tuple[tuple[int, int | None], list[str]]]:
    """Rows with finished runs grouped by (iterations, training subset), in row order; only
    groups holding a 1cycle/CLR row and at least one other policy: equal-budget comparisons."""
    groups: dict[tuple[int, int | None], list[str]] = {}
    for name in train_rows:
        done = _finished(rows.get(name, []))
        if done:
            groups.setdefault(_budget_key(done[0].config), []).append(name)
    out = []
    for key, names in groups.items():
        policies = [_finished(rows[n])[0].config.get("policy") for n in names]
        if any(p in CYCLIC for p in policies) and any(p not in CYCLIC for p in policies):
            out.append((key, names))
    return out


def mean_curve(runs: Sequence[RunRecord], key: str = "test_acc") -> list[tuple[int, float]]:
    """(iteration, mean of ``key`` over the runs that recorded it there), by iteration."""
    at: dict[int, list[float]] = {}
    for run in runs:
        for m in run.metrics:
            v = m.get(key)
            if v is not None and math.isfinite(v):
                at.setdefault(int(m["iteration"]), []).append(float(v))
    return [(i, float(np.mean(v))) for i, v in sorted(at.items())]


def iterations_to_reach(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """The first recorded iteration at which ``curve`` reaches ``target`` (None: never)."""
    return next((i for i, v in curve if v >= target), None)


def band(a: Sequence[float], b: Sequence[float]) -> float:
    """Two standard errors of the difference of the means of ``a`` and ``b``
    (sqrt(s_a^2/n_a + s_b^2/n_b)): the tie band of :func:`verdict`."""
    _, sa, na = mean_std(a)
    _, sb, nb = mean_std(b)
    return 2.0 * math.sqrt(sa**2 / na + sb**2 / nb)


def verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """``win`` / ``tie`` / ``loss`` of ``a`` against ``b`` (final accuracies over seeds).

    A tie when the means differ by at most two standard errors of the difference
    (sqrt(s_a^2/n_a + s_b^2/n_b)): roughly a 95% band for normal noise. Rough with
    3 seeds, and said so in the report. One seed on either side: ``n/a``.
    """
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    if na < 2 or nb < 2:
        return "n/a (needs 2+ seeds each)"
    margin = band(a, b)
    diff = ma - mb
    if abs(diff) <= margin:
        return f"tie ({diff:+.2f}, band ±{margin:.2f})"
    return f"{'win' if diff > 0 else 'loss'} ({diff:+.2f}, band ±{margin:.2f})"


def _comparison_section(ctx, train_rows, rows, plots: Path, base: Path) -> list[str]:
    from superconv import plots as P

    groups = _budget_groups(train_rows, rows)
    if not groups:
        return []
    head, body = _comparison_rows(groups, rows)
    lines = [
        "",
        "## Equal budgets: 1cycle against each baseline",
        "",
        _row(head),
        _row(["---"] * len(head)),
    ]
    lines += [_row(cells) for cells in body]
    lines += ["", COMPARISON_NOTE, ""]
    for (iterations, subset), names in groups:
        budget = _budget_text(iterations, subset)
        stem = f"budget-{iterations}" + (f"-{subset}" if subset else "")
        path = P.plot_curves(
            {n: [m for r in _finished(rows[n]) for m in r.metrics] for n in names},
            y="test_acc",
            path=plots / f"{stem}.png",
            band="std",
            title=f"test accuracy vs iteration at {budget}: mean over seeds, band ± 1 std",
        )
        caption = f"test accuracy vs iteration, all policies at {budget}"
        lines += [f"![{caption}]({path.relative_to(base).as_posix()})", ""]
    return lines


# ----------------------------------------------------------------------------- cost with tuning
def row_tuning(step: Any, runs: Sequence[RunRecord], rows, steps) -> dict[str, Any]:
    """What a row paid to choose its hyper-parameters, per seed: ``iterations``,
    ``images`` (training images) and ``seconds`` (None where a tuning run did not record
    its wall time), and ``paid`` (what for).

    A row tuned from a sweep pays the whole sweep (every trial that ended), from a range
    test the test; a ``superconv fit`` row its own range test and check (mean over its
    finished seeds, from fit.json); rows that tune nothing pay nothing. A sweep or test
    that several rows share is charged in full to each: what one user with one budget
    would pay.
    """
    if isinstance(step, Fit):
        costs = [fit_tuning_cost(r) for r in _finished(runs)]
        if not costs:
            return {"iterations": None, "images": None, "seconds": None, "paid": "fit"}
        mean = {k: float(np.mean([c[k] for c in costs])) for k in costs[0]}
        return {**mean, "paid": "its range test + check"}
    total = {"iterations": 0, "images": 0, "seconds": 0.0}
    paid = []
    for source in dict.fromkeys(t.source for t in getattr(step, "tuned", ())):
        src = steps.get(source)
        if isinstance(src, Sweep):
            tuning = [r for t in src.trials() for r in rows.get(t.name, [])]
        else:
            tuning = list(rows.get(source, []))
        cost = tuning_cost(tuning)
        total["iterations"] += cost["iterations"]
        total["images"] += cost["images"]
        ended = [r for r in tuning if r.status != "unfinished"]
        walls = [(r.summary or {}).get("wall_time") for r in ended]
        if total["seconds"] is not None and all(w is not None for w in walls):
            total["seconds"] += float(sum(walls))
        else:
            total["seconds"] = None
        paid.append(f"`{source}` ({cost['runs']} run(s))")
    return {**total, "paid": ", ".join(paid) or "nothing (no tuning)"}


COST_NOTE = (
    "Iterations and training images include tuning: a row tuned by a sweep pays the whole "
    "sweep, a row tuned by a range test pays the test, `fit` rows pay their own range test "
    "and check (mean over seeds, from fit.json); a sweep shared by several rows is charged "
    "to each in full (what one user with one budget pays); at the sweep's own budget its "
    "winning trial is already a trained model, so there the total counts that run twice. "
    "× run: total iterations over one training run's. Wall time per seed, evaluations not counted; — where a tuning run did "
    "not record its wall time (range tests before this column existed) or nothing ran yet."
)


def _cost_section(ctx, lay: _Layout, rows, plots: Path, base: Path) -> list[str]:
    """The cost of each row including its tuning, and time-to-accuracy plots whose x axis
    counts the tuning iterations first (only for plans that tune by training: sweeps, fit)."""
    from superconv import plots as P

    plan_steps = list(ctx.plan.steps) if ctx.plan is not None else []
    if not any(isinstance(s, (Sweep, Fit)) for s in plan_steps):
        return []
    head = [
        "row", "n", "test acc %", "training it", "tuning it", "total it (× run)",
        "total training images", "wall / seed: training", "tuning", "total", "tuning paid for",
    ]  # fmt: skip
    body, by_budget = [], {}
    for step in lay.planned:
        runs = rows.get(step.name, [])
        done = _finished(runs)
        config = done[0].config if done else step.config.to_dict()
        iterations = int(config.get("iterations") or 0)
        batch = int(config.get("batch_size") or 0)
        if not done:
            body.append([f"`{step.name}`", "0", "not run yet", f"{iterations:,}", *[_DASH] * 6,
                         _DASH])  # fmt: skip
            continue
        tuning = row_tuning(step, runs, rows, lay.steps)
        tune_it = tuning["iterations"] or 0
        wall = mean_std(_values(runs, "wall_time"))[0]
        seconds = tuning["seconds"]
        total_wall = wall + seconds if seconds is not None and math.isfinite(wall) else math.nan
        body.append(
            [
                f"`{step.name}`",
                str(len(done)),
                format_mean_std(_values(runs, "final_test_acc")),
                f"{iterations:,}",
                f"{tune_it:,.0f}",
                f"{iterations + tune_it:,.0f} ({(iterations + tune_it) / iterations:.1f}×)",
                f"{iterations * batch + (tuning['images'] or 0):,.0f}",
                _duration(wall),
                _duration(seconds) if seconds is not None else _DASH,
                _duration(total_wall),
                tuning["paid"],
            ]
        )
        shifted = [
            {**m, TUNED_X: int(m["iteration"]) + round(tune_it)} for r in done for m in r.metrics
        ]
        by_budget.setdefault(_budget_key(config), {})[step.name] = shifted
    lines = [
        "",
        "## Cost including tuning",
        "",
        _row(head),
        _row(["---"] * len(head)),
        *[_row(cells) for cells in body],
        "",
        COST_NOTE,
        "",
    ]
    for (iterations, subset), series in by_budget.items():
        budget = _budget_text(iterations, subset)
        stem = f"time-to-accuracy-{iterations}" + (f"-{subset}" if subset else "")
        path = P.plot_curves(
            series,
            y="test_acc",
            x=TUNED_X,
            path=plots / f"{stem}.png",
            band="std",
            title=f"test accuracy vs iterations including tuning, {budget}: each row starts "
            "after its tuning",
        )
        caption = f"test accuracy vs training iterations including tuning, {budget}"
        lines += [f"![{caption}]({path.relative_to(base).as_posix()})", ""]
    return lines


TUNED_X = "iterations_with_tuning"  # the x of the time-to-accuracy plots


# ----------------------------------------------------------------------------- fit's targets
FIT_TARGETS_NOTE = (
    "Each `fit` row against the rows whose LR a sweep chose at the same budget (same "
    "iterations and training images). Against the swept 1cycle: fit's mean must be at least "
    "the swept mean − max(1 point, 2 SE), SE the standard error of the difference of the "
    "means (sqrt(s1²/n1 + s2²/n2), as in the win / tie / loss band), at no more than 2× one "
    "training run's iterations including its tuning. Against every other swept policy: not "
    "a loss by the band. Costs count tuning as in the table above (a sweep shared by several "
    "budgets is charged in full to each). n/a: fewer than 2 finished seeds on a side."
)
FIT_MAX_COST = 2.0  # fit's cost target: at most 2x one training run, tuning included


def _swept_rows(lay: _Layout, rows) -> dict[tuple[int, int | None], list[Any]]:
    """Train steps whose tuned values all come from sweeps, by budget (iterations, subset)."""
    out: dict[tuple[int, int | None], list[Any]] = {}
    for step in lay.planned:
        sources = [lay.steps.get(t.source) for t in getattr(step, "tuned", ())]
        if isinstance(step, Train) and sources and all(isinstance(s, Sweep) for s in sources):
            done = _finished(rows.get(step.name, []))
            config = done[0].config if done else step.config.to_dict()
            out.setdefault(_budget_key(config), []).append(step)
    return out


def _fit_targets_section(lay: _Layout, rows) -> list[str]:
    """``superconv fit`` rows against the targets set for them (issue 22), computed from
    the runs: accuracy and cost against the swept 1cycle, not a loss against each other
    swept policy at the same budget."""
    fits = [s for s in lay.planned if isinstance(s, Fit)]
    if not fits:
        return []
    swept = _swept_rows(lay, rows)
    head = ["budget", "`fit` row", "fit test acc %", "fit cost", "against", "its test acc %",
            "its cost", "target", "result"]  # fmt: skip
    body = []
    for fit_step in fits:
        runs = rows.get(fit_step.name, [])
        config = fit_step.config.to_dict()
        iterations = int(config.get("iterations") or 0)
        key = _budget_key(config)
        fit_acc = _values(runs, "final_test_acc")
        fit_cost = _cost_multiple(fit_step, runs, rows, lay, iterations)
        for other in swept.get(key, []):
            other_runs = rows.get(other.name, [])
            acc = _values(other_runs, "final_test_acc")
            cost = _cost_multiple(other, other_runs, rows, lay, iterations)
            cyclic = other.config.policy in CYCLIC
            target = f"≥ mean − max(1, 2 SE); cost ≤ {FIT_MAX_COST:g}×" if cyclic else "not a loss"
            body.append(
                [
                    _budget_text(*key),
                    f"`{fit_step.name}`",
                    format_mean_std(fit_acc) if fit_acc else "not run yet",
                    f"{fit_cost:.2f}×" if fit_cost is not None else _DASH,
                    f"`{other.name}`",
                    format_mean_std(acc) if acc else "not run yet",
                    f"{cost:.2f}×" if cost is not None else _DASH,
                    target,
                    fit_target_result(fit_acc, acc, fit_cost, cyclic),
                ]
            )
    if not body:
        return []
    return ["", "## `superconv fit` against its targets", "", _row(head),
            _row(["---"] * len(head)), *[_row(c) for c in body], "", FIT_TARGETS_NOTE, ""]  # fmt: skip


def _cost_multiple(step, runs, rows, lay: _Layout, iterations: int) -> float | None:
    """Training plus tuning iterations over one training run's (None: nothing finished)."""
    if not _finished(runs) or not iterations:
        return None
    tuning = row_tuning(step, runs, rows, lay.steps)["iterations"]
    return None if tuning is None else (iterations + tuning) / iterations


def fit_target_result(
    fit_acc: Sequence[float], other_acc: Sequence[float], fit_cost: float | None, swept: bool
) -> str:
    """The result cell of the fit-targets table: ``met`` / ``missed`` with the numbers
    that decide it. ``swept``: against the swept 1cycle (accuracy floor and cost cap),
    else against a baseline (not a loss by :func:`verdict`'s band)."""
    ma, _, na = mean_std(fit_acc)
    mb, _, nb = mean_std(other_acc)
    if not na or not nb:
        return "not run yet"
    if na < 2 or nb < 2:
        return "n/a (needs 2+ seeds each)"
    if not swept:
        result = verdict(fit_acc, other_acc)
        return f"{'missed' if result.startswith('loss') else 'met'}: {result}"
    floor = mb - max(1.0, band(fit_acc, other_acc))
    accurate = ma >= floor
    cheap = fit_cost is not None and fit_cost <= FIT_MAX_COST
    parts = [
        f"accuracy {'met' if accurate else 'missed'} ({ma:.2f} {'≥' if accurate else '<'} "
        f"{floor:.2f})",
        f"cost {'met' if cheap else 'missed'}"
        + (f" ({fit_cost:.2f}×)" if fit_cost is not None else ""),
    ]
    return ("met: " if accurate and cheap else "missed: ") + ", ".join(parts)


COMPARISON_NOTE = (
    "Win / tie / loss: a tie when the means differ by at most two standard errors of the "
    "difference (sqrt(s1²/n1 + s2²/n2)); with a few seeds this is a rough band, not a test. "
    "Iterations to reach: the first evaluation at which 1cycle's mean test accuracy (over "
    "seeds) is at least the baseline's final mean; evaluations are spaced as in metrics.csv, "
    "so this is rounded up to the next evaluation."
)


def _budget_text(iterations: int, subset: int | None) -> str:
    return f"{iterations:,} it" + (f", {subset:,} images" if subset else "")


def _comparison_rows(groups, rows):
    """(header, one list of cells per (1cycle row, baseline row) pair at an equal budget)."""
    head = [
        "budget",
        "1cycle row",
        "baseline row",
        "1cycle acc %",
        "baseline acc %",
        "1cycle vs baseline",
        "iterations 1cycle needs to reach the baseline's final acc",
    ]
    body = []
    for (iterations, subset), names in groups:
        cyclic = [n for n in names if _finished(rows[n])[0].config.get("policy") in CYCLIC]
        others = [n for n in names if n not in cyclic]
        for c in cyclic:
            c_acc = _values(rows[c], "final_test_acc")
            curve = mean_curve(_finished(rows[c]))
            for b in others:
                b_acc = _values(rows[b], "final_test_acc")
                target, _, n = mean_std(b_acc)
                reach = iterations_to_reach(curve, target) if n else None
                reached = (
                    _DASH
                    if not n
                    else (f"{reach:,} ({reach / iterations:.0%})" if reach else "not reached")
                )
                body.append(
                    [
                        _budget_text(iterations, subset),
                        f"`{c}`",
                        f"`{b}`",
                        format_mean_std(c_acc),
                        format_mean_std(b_acc),
                        verdict(c_acc, b_acc),
                        reached,
                    ]
                )
    return head, body


# ----------------------------------------------------------------------------- training-set size
# Config keys that may differ between the rows of one size family (or between seeds of a row).
_NOT_SETTINGS = frozenset({"seed", "train_subset", "threads", "device", "data_dir"})
_SIZE_SUFFIX = re.compile(r"-\d+k$")  # pc-10k -> pc: the label of a family of sizes
SIZE_NOTE = (
    "Rows that differ only in their number of training images (same policy, settings and "
    "iteration count), final test accuracy mean ± std over seeds; the 1cycle − baseline lines "
    "are differences of the means (the equal-budget table gives each its band). The paper "
    "(section 6.1, Fig. 6a) reports super-convergence ahead of piecewise-constant training by "
    "1.2, 5.2 and 9.2 points at 50k, 20k and 10k images: a gap that grows as data shrinks."
)


def _size_families(train_rows: Sequence[str], rows) -> list[tuple[str, dict[int, str]]]:
    """Rows with finished runs that differ only in the number of training images, as
    (label, {images: row}) with 2+ sizes: the limited-data comparison (Table 1's lower rows,
    Fig. 6a). Settings are compared as recorded in config.json, so a tuned LR that a sweep
    picked once and every size reuses keeps the rows together."""
    families: dict[str, dict[int, str]] = {}
    for name in train_rows:
        done = _finished(rows.get(name, []))
        images = int((done[0].summary or {}).get("train_images") or 0) if done else 0
        if images:
            settings = {k: v for k, v in done[0].config.items() if k not in _NOT_SETTINGS}
            key = json.dumps(settings, sort_keys=True, default=str)
            families.setdefault(key, {}).setdefault(images, name)
    out = []
    for by_size in families.values():
        if len(by_size) > 1:
            names = list(by_size.values())
            stems = {_SIZE_SUFFIX.sub("", n) for n in names}
            label = stems.pop() if len(stems) == 1 else " / ".join(names)
            out.append((label, dict(sorted(by_size.items()))))
    return out


def _size_section(train_rows, rows, plots: Path, base: Path) -> list[str]:
    from superconv import plots as P

    families = _size_families(train_rows, rows)
    if not families:
        return []
    sizes = sorted({n for _, by_size in families for n in by_size})
    accs = {
        label: {n: _values(rows[row], "final_test_acc") for n, row in by_size.items()}
        for label, by_size in families
    }
    setting = {label: _finished(rows[next(iter(b.values()))])[0].config for label, b in families}
    head = ["rows", "policy", "iterations", *[f"{n:,} images" for n in sizes]]
    body = [
        [
            f"`{label}`",
            str(setting[label].get("policy")),
            f"{int(setting[label].get('iterations') or 0):,}",
            *[format_mean_std(accs[label].get(n, [])) for n in sizes],
        ]
        for label, _ in families
    ]
    for c, _ in families:
        if setting[c].get("policy") not in CYCLIC:
            continue
        for b, _ in families:
            same = setting[b].get("iterations") == setting[c].get("iterations")
            if setting[b].get("policy") in CYCLIC or not same:
                continue
            gaps = []
            for n in sizes:
                mc, _, nc = mean_std(accs[c].get(n, []))
                mb, _, nb = mean_std(accs[b].get(n, []))
                gaps.append(f"{mc - mb:+.2f}" if nc and nb else _DASH)
            body.append([f"`{c}` − `{b}`", "1cycle − baseline", _DASH, *gaps])
    path = P.plot_by_size(
        {label: accs[label] for label, _ in families},
        path=plots / "data-size.png",
        title="final test accuracy vs training images: mean, bar ± 1 std",
    )
    return [
        "",
        "## Training-set size (limited data)",
        "",
        _row(head),
        _row(["---"] * len(head)),
        *[_row(cells) for cells in body],
        "",
        SIZE_NOTE,
        "",
        f"![final test accuracy vs training images]({path.relative_to(base).as_posix()})",
        "",
    ]


# ----------------------------------------------------------------------------- the index
INDEX_FILE = "README.md"
README_START = "<!-- results:start (written by `superconv report results --readme README.md`) -->"
README_END = "<!-- results:end -->"


def summary_markdown(folders: Sequence[str | Path], base: str | Path) -> str:
    """One Markdown summary of several results folders: all final accuracies in one table,
    all range tests in another, all eq. 8 estimates in a third; each row links to its
    folder's report (links relative to ``base``). Read from the run directories of
    ended runs (finished or diverged) only; each report also lists runs in progress.
    """
    base = Path(base)
    acc, tests, ests, unrun, pairs = [], [], [], [], []
    acc_head = test_head = est_head = pair_head = None
    for folder in folders:
        root = Path(folder)
        ctx = _context(root)
        # Ended runs only: a run still going (or killed) says nothing yet, and this summary
        # must read the same wherever the results are copied while runs go on.
        rows = {n: [r for r in runs if r.status != "unfinished"] for n, runs in scan(root).items()}
        rows = {n: runs for n, runs in rows.items() if runs}
        lay = _layout(root, rows, ctx)
        exp_id = ctx.experiment.id if ctx.experiment is not None else root.parent.name
        link = _link(root / REPORT_FILE, base)
        lead = f"[{exp_id}]({link})"
        item = ctx.experiment.paper_item if ctx.experiment is not None else _DASH
        ran = [n for n in lay.train_rows if rows.get(n)]  # rows not started: counted below
        tested = [n for n in lay.test_rows if rows.get(n)]
        idle = len(lay.train_rows) + len(lay.test_rows) - len(ran) - len(tested)
        if idle:
            unrun.append(f"{lead}: {idle} row(s)")
        if ran:
            head, body, _ = _results_rows(ctx, ran, lay.steps, rows, show_val=False)
            acc_head = acc_head or head
            acc += [[lead, item, *cells] for cells in body]
        if tested:
            head, body = _range_rows(ctx, tested, lay.steps, rows)
            test_head = test_head or head
            tests += [[lead, item, ctx.scale, *cells] for cells in body]
        groups = _budget_groups(ran, rows)
        if groups:
            head, body = _comparison_rows(groups, rows)
            pair_head = pair_head or head
            pairs += [[lead, *cells] for cells in body]
        if lay.estimate_rows:
            head, body = _estimate_rows(ctx, lay.estimate_rows, lay.steps, rows)
            est_head = est_head or head[:6]
            window = ctx.plan.estimates_window if ctx.plan is not None else None
            for cells in body:  # the window differs between experiments: named in the cell
                early = f"{cells[6]} (first {window} it)" if window else _DASH
                ests.append([lead, item, ctx.scale, *cells[:6], early, cells[-1]])
    lines: list[str] = []

    def table(title: str, head: list[str], body: list[list[str]]) -> None:
        lines.extend(["", f"**{title}**", "", _row(head), _row(["---"] * len(head))])
        lines.extend(_row(cells) for cells in body)

    if acc:
        table("Final test accuracy", ["experiment", "paper item", *acc_head], acc)
    if tests:
        table("LR range tests", ["experiment", "paper item", "scale", *test_head], tests)
    if ests:
        head = ["experiment", "paper item", "scale", *est_head, "mean smoothed, early window"]
        table("Eq. 8 LR estimate", [*head, "paper"], ests)
    if pairs:
        table("Equal budgets: 1cycle against each baseline", ["experiment", *pair_head], pairs)
        lines.extend(["", COMPARISON_NOTE])
    if not lines:
        lines = ["", "No runs yet."]
    if unrun:
        lines += ["", "Planned but not run yet (listed in each report): " + "; ".join(unrun) + "."]
    return "\n".join(lines[1:]) + "\n"


# The README's short results table: the experiments behind its headline claims, in this
# order (the full tables stay in results/README.md, written by write_index).
HEADLINE_EXPERIMENTS = ("suggest", "fair-comparison", "mnist-lenet")
_HEADLINE_COLUMNS = (
    "row",
    "model",
    "iterations",
    "n",
    "test acc % (mean ± std)",
    "paper",
    "time / seed",
)  # of _results_rows' header


def headline_markdown(folders: Sequence[str | Path], base: str | Path) -> str:
    """The README's headline table: the ended rows of HEADLINE_EXPERIMENTS on all their
    training data (limited-data rows stay in the full tables), a few columns each, and a
    link to the full summary (``results/README.md``). Read from the run directories only.
    """
    base = Path(base)
    found: dict[str, list[list[str]]] = {}
    head: list[str] = []
    for folder in folders:
        root = Path(folder)
        ctx = _context(root)
        exp_id = ctx.experiment.id if ctx.experiment is not None else root.parent.name
        if exp_id not in HEADLINE_EXPERIMENTS:
            continue
        rows = {n: [r for r in runs if r.status != "unfinished"] for n, runs in scan(root).items()}
        rows = {n: runs for n, runs in rows.items() if runs}
        lay = _layout(root, rows, ctx)
        ran = [n for n in lay.train_rows if rows.get(n)]
        ran = [n for n in ran if not rows[n][0].config.get("train_subset")]
        if not ran:
            continue
        full_head, body, _ = _results_rows(ctx, ran, lay.steps, rows, show_val=False)
        keep = [full_head.index(c) for c in _HEADLINE_COLUMNS]
        head = ["experiment", *(full_head[i] for i in keep)]
        lead = f"[{exp_id}]({_link(root / REPORT_FILE, base)}) ({ctx.scale})"
        found.setdefault(exp_id, []).extend(
            [lead if i == 0 else "", *(cells[k] for k in keep)] for i, cells in enumerate(body)
        )
    index = _link(base / "results" / INDEX_FILE, base) if (base / "results").is_dir() else None
    more = f" All tables: [results/README.md]({index})." if index else ""
    if not found:
        return f"No runs yet.{more}\n"
    lines = [_row(head), _row(["---"] * len(head))]
    for exp_id in HEADLINE_EXPERIMENTS:
        lines += [_row(cells) for cells in found.get(exp_id, [])]
    lines += ["", f"Ended runs on all their training data; test accuracy over seeds.{more}"]
    return "\n".join(lines) + "\n"


def _link(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(path, base)).as_posix()


def write_index(root: str | Path, folders: Sequence[str | Path]) -> Path:
    """Write ``root/README.md``: the summary of every results folder under ``root``."""
    root = Path(root)
    text = "\n".join(
        [
            "# Results",
            "",
            "Every number here is read from the run directories below this folder (written by "
            "`superconv reproduce`; the exact command, commit, device and seeds are in each "
            "folder's manifest.json and at the top of its report). Scale: `small` = smoke test, "
            "`reduced` = ResNet-20 / batch 128 on a CPU, `full` = the paper's setting. "
            "Mean ± sample std over seeds; paper = the paper's number, log = the authors' raw log.",
            "Regenerate with `superconv report results`.",
            "",
            summary_markdown(folders, root),
        ]
    )
    return atomic_write_text(root / INDEX_FILE, text)


def update_readme(readme: str | Path, folders: Sequence[str | Path]) -> Path:
    """Replace the block between the results markers in ``readme`` with the headline table
    (headline_markdown; the full summary goes to results/README.md, write_index)."""
    readme = Path(readme)
    if not readme.is_file():
        raise UserError(f"{readme} does not exist: name the README to update.")
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise UserError(
            f"{readme} has no results block: add the lines\n{README_START}\n{README_END}\n"
            "where the summary should go."
        )
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    summary = headline_markdown(folders, readme.parent)
    return atomic_write_text(readme, f"{head}{README_START}\n{summary}{README_END}{tail}")


# ----------------------------------------------------------------------------- plots
def _plots_section(ctx, train_rows, test_rows, estimate_rows, rows, plots: Path, base: Path):
    from superconv import plots as P

    made: list[tuple[str, Path]] = []
    curves = {n: [m for r in rows.get(n, []) for m in r.metrics] for n in train_rows}
    curves = {n: m for n, m in curves.items() if m}
    for key, what in (
        ("test_acc", "test accuracy (%)"),
        ("train_loss", "train loss"),
        ("test_loss", "test loss"),
    ):
        series = {n: m for n, m in curves.items() if any(row.get(key) is not None for row in m)}
        if series:
            path = P.plot_curves(
                series,
                y=key,
                path=plots / f"{key}.png",
                band="std",
                title=f"{what} vs iteration: mean over seeds, band ± 1 std ({ctx.scale} scale)",
            )
            made.append((f"{what} vs iteration (shaded: seed spread)", path))
    schedules = _schedule_rows(train_rows, rows)
    for key, what in (("lr", "learning rate"), ("momentum", "momentum")):
        series = {n: s[key] for n, s in schedules.items() if s.get(key)}
        if series:
            path = P.plot_curves(
                series,
                y=key,
                path=plots / f"{key}.png",
                band="std",
                title=f"{what} vs iteration (the recorded policy of each row)",
            )
            made.append((f"{what} vs iteration", path))
    from superconv.range_test import RangeTestCurve
    from superconv.suggest import Suggestion

    for name in test_rows:
        tests = [r for r in rows.get(name, []) if r.range_test is not None]
        if not tests:
            continue
        first = tests[0]
        data = first.range_test
        curve = RangeTestCurve.from_dict(data["curve"])
        suggestion = Suggestion.from_dict(data["suggestion"]) if data.get("suggestion") else None
        path = P.plot_range_test(
            curve,
            suggestion,
            path=plots / f"range_test-{name}.png",
            title=f"{name} (seed {first.seed}): evaluated on the {data.get('evaluate_on', 'val')} "
            f"set; {curve.stop_reason}",
            eval_name=data.get("evaluate_on", "val"),
        )
        made.append((f"range test `{name}` with the suggested band", path))
    if estimate_rows:
        window = ctx.plan.estimates_window if ctx.plan is not None else None
        series = {}
        for name in estimate_rows:
            run = next(r for r in rows[name] if r.estimates)
            series[f"{name} (seed {run.seed})"] = [
                (e["iteration"], _nan(e["estimate"]), _nan(e["smoothed"]))
                for e in run.estimates
                if window is None or e["iteration"] < window
            ]
        span = f"first {window} iterations" if window else "whole run"
        path = P.plot_estimates(
            series, plots / "estimates.png", title=f"eq. 8 LR estimate ({span}); faint: raw"
        )
        made.append(("eq. 8 estimate vs iteration", path))
    if not made:
        return []
    lines = ["", "## Figures", ""]
    for caption, path in made:
        rel = path.relative_to(base).as_posix()
        lines += [f"![{caption}]({rel})", ""]
    return lines


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _schedule_rows(names: Sequence[str], rows) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per row, the LR and momentum of its recorded policy (config.json) at ~300 iterations."""
    from superconv.schedules import policy_from_dict

    out = {}
    for name in names:
        runs = rows.get(name, [])
        if not runs or "policy_built" not in runs[0].config:
            continue
        config = runs[0].config
        policy = policy_from_dict(config["policy_built"])
        total = int(config.get("iterations", 1))
        steps = sorted({round(i * (total - 1) / 299) for i in range(300)}) if total > 1 else [0]
        lr = (
            [{"iteration": s, "lr": float(policy["lr"](s))} for s in steps]
            if "lr" in policy
            else []
        )
        if "momentum" in policy:
            mom = [{"iteration": s, "momentum": float(policy["momentum"](s))} for s in steps]
        elif config.get("optimizer") in ("sgd", "nesterov", "adam", "adamw"):
            mom = [{"iteration": s, "momentum": float(config["momentum"])} for s in (0, total - 1)]
        else:
            mom = []
        out[name] = {"lr": lr, "momentum": mom}
    return out


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


# ----------------------------------------------------------------------------- any run folder
@dataclass
class RunView:
    """One run folder of any kind, as ``superconv report RUN`` reads it: ``kind`` is
    ``train`` (train, reproduce), ``fit`` or ``lr-find``; ``metrics`` the training
    rows (a fit's final run; none for an LR range test)."""

    path: Path
    kind: str
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]


def is_run_folder(path: str | Path) -> bool:
    """Does ``path`` hold one run (train, reproduce seed, fit or lr-find), not a results tree?"""
    path = Path(path)
    return any((path / name).is_file() for name in ("config.json", "fit.json", "range_test.json"))


def read_any_run(path: str | Path) -> RunView:
    """Read a run folder of any kind (see :class:`RunView`); a UserError names what is missing."""
    path = Path(path)
    if (path / "fit.json").is_file():
        fit = read_json(path / "fit.json") or {}
        train = path / "train"
        config = read_json(train / "config.json") or {}
        summary = read_json(train / "summary.json") or {}
        chosen = fit.get("chosen")
        if isinstance(chosen, dict):
            summary = {**summary, "chosen_max_lr": chosen.get("max_lr")}
        return RunView(path, "fit", config, summary, read_table(train / "metrics.csv"))
    if (path / "range_test.json").is_file():
        record = read_json(path / "range_test.json") or {}
        settings = record.get("settings") or {}
        suggestion = record.get("suggestion") or {}
        summary = {
            "status": "lr-find",
            "max_lr": suggestion.get("max_lr"),
            "safe_max_lr": suggestion.get("safe_max_lr"),
            "rule": suggestion.get("rule"),
            "steps": len((record.get("curve") or {}).get("losses") or []),
        }
        if record.get("suggestion_error"):
            summary["note"] = record["suggestion_error"]
        config = read_json(path / "config.json") or (settings if isinstance(settings, dict) else {})
        return RunView(path, "lr-find", config, summary, [])
    if (path / "config.json").is_file():
        run = read_run(path)
        return RunView(path, "train", run.config, dict(run.summary or {}), run.metrics)
    raise UserError(
        f"{path} is not a run folder: it holds no config.json (train, reproduce), fit.json "
        "(fit) or range_test.json (lr-find)."
    )


_SUMMARY_KEYS = (
    "status", "iterations", "final_test_acc", "best_test_acc", "final_val_acc",
    "final_train_loss", "wall_time", "collapse", "max_lr", "safe_max_lr", "rule",
    "chosen_max_lr", "note",
)  # fmt: skip


def run_summary_text(view: RunView) -> str:
    """The summary of one run, a few lines of text."""
    c = view.config
    what = ", ".join(
        f"{k} {c[k]}" for k in ("model", "dataset", "policy", "batch_size") if c.get(k) is not None
    )
    lines = [f"{view.path} ({view.kind}): {what or 'settings not recorded'}"]
    if c.get("policy_params"):
        lines.append(f"  policy params: {json.dumps(c['policy_params'])}")
    for key in _SUMMARY_KEYS:
        value = view.summary.get(key)
        if value is None:
            continue
        if key == "wall_time":
            value = _duration(float(value))
        elif isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"  {key.replace('_', ' ')}: {value}")
    if view.metrics:
        lines.append(f"  {len(view.metrics)} evaluations in metrics.csv")
    return "\n".join(lines)


def compare_runs_table(views: Sequence[RunView]) -> str:
    """A Markdown table comparing runs side by side (one row each)."""
    head = "| run | kind | model | dataset | policy | status | iterations | final test acc | best test acc | time |"
    lines = [head, "|" + "---|" * 10]
    for v in views:
        s, c = v.summary, v.config
        lines.append(
            "| "
            + " | ".join(
                [
                    str(v.path),
                    v.kind,
                    str(c.get("model", _DASH)),
                    str(c.get("dataset", _DASH)),
                    str(c.get("policy", _DASH)),
                    str(s.get("status", "unfinished")),
                    str(s.get("iterations", _DASH)),
                    _num(s.get("final_test_acc")),
                    _num(s.get("best_test_acc")),
                    _duration(float(s["wall_time"])) if s.get("wall_time") is not None else _DASH,
                ]
            )
            + " |"
        )
    return "\n".join(lines)
