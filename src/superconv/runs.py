"""Reading run directories back: what a run, a sweep or a results folder left on disk.

:mod:`superconv.records` writes a run directory; this module reads it back, checking
every file as it goes (:func:`read_run`, :func:`read_fit_run`, :func:`scan`), and
counts what tuning runs spent (:func:`tuning_cost`, :func:`fit_tuning_cost`). The
report and the runner both read runs through it; it never trains.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superconv.errors import UserError
from superconv.records import read_csv

MANIFEST_FILE = "manifest.json"  # a results folder's record of the reproduce calls
RANGE_TEST_FILE = "range_test.json"  # a range test's curve and suggestion
FIT_FILE = "fit.json"  # superconv.fit.FIT_FILE (not imported: reading never trains)
DONE = ("finished", "diverged")  # a diverged run is a finding: recorded, not retried
_SEED_DIR = re.compile(r"seed(\d+)")


@dataclass
class RunRecord:
    """What one run directory holds (files that are missing are None / empty)."""

    path: Path
    row: str
    seed: int
    config: dict[str, Any]
    summary: dict[str, Any] | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    estimates: list[dict[str, Any]] = field(default_factory=list)
    range_test: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None  # fit.json of a `superconv fit` row (read_fit_run)

    @property
    def status(self) -> str:
        """``finished``, ``diverged`` or ``unfinished`` (killed or still running)."""
        return (self.summary or {}).get("status", "unfinished")


def _seed_of(path: Path, config: dict[str, Any]) -> int:
    """The seed a run folder ``.../seed<k>`` names, else its config's."""
    match = _SEED_DIR.fullmatch(path.name)
    return int(match.group(1)) if match else int(config.get("seed", 0))


def read_run(path: str | Path) -> RunRecord:
    """Read one run directory ``.../<row>/seed<k>/``.

    Every file is checked as it is read: a damaged one (not JSON, a JSON value of
    the wrong shape, a CSV with text where numbers belong) is a :class:`UserError`
    naming the file and what is wrong with it.
    """
    path = Path(path)
    config = read_json(path / "config.json")
    if config is None:
        raise UserError(f"{path} is not a run directory: it has no config.json.")
    _check_fields(path / "config.json", config, _CONFIG_TYPES)
    summary = read_json(path / "summary.json")
    if summary is not None:
        _check_fields(path / "summary.json", summary, _SUMMARY_TYPES)
    return RunRecord(
        path=path,
        row=path.parent.name,
        seed=_seed_of(path, config),
        config=config,
        summary=summary,
        metrics=read_table(path / "metrics.csv"),
        estimates=read_table(path / "estimates.csv"),
        range_test=read_json(path / "range_test.json"),
    )


def read_fit_run(path: str | Path) -> RunRecord:
    """Read one seed of a ``superconv fit`` row, ``.../<row>/seed<k>/fit.json``, as a run:
    the config, summary and metrics of its training phase (``<seed>/<run>/``), and
    ``fit`` = fit.json, whose phases record the tuning (range test, check) and its cost.
    Unfinished (its training phase not ended): the summary is None."""
    path = Path(path)
    data = read_json(path / FIT_FILE)
    if data is None:
        raise UserError(f"{path} is not a fit folder: it has no {FIT_FILE}.")
    phases = data.get("phases")
    settings = data.get("settings")
    if not isinstance(phases, dict) or not isinstance(settings, dict):
        raise _damaged(path / FIT_FILE, "lacks its 'phases' or 'settings'")
    done = phases.get("train")
    run_name = (done or {}).get("run") or data.get("train_attempt", {}).get("run") or "train"
    trained = path / str(run_name)
    config = read_json(trained / "config.json") or dict(settings.get("train_config") or {})
    _check_fields(path / FIT_FILE, config, _CONFIG_TYPES)
    summary = None
    if isinstance(done, dict):
        summary = {**done, "status": done.get("status", "finished")}
        _check_fields(path / FIT_FILE, summary, _SUMMARY_TYPES)
    return RunRecord(
        path=path,
        row=path.parent.name,
        seed=_seed_of(path, config),
        config=config,
        summary=summary,
        metrics=read_table(trained / "metrics.csv"),
        fit=data,
    )


def fit_tuning_cost(run: RunRecord) -> dict[str, Any]:
    """What one fit spent before its final run: the range test(s), the check and any
    diverged final attempts (rerun at half the LR), in iterations, training images and
    seconds, as fit.json and the attempts' summaries record them."""
    data = run.fit or {}
    phases = data.get("phases") or {}
    rt, check = phases.get("range_test") or {}, phases.get("check") or {}
    trials = check.get("trials") or []
    iterations = int(rt.get("iterations") or 0) + int(
        check.get("cost_iterations", sum(int(t.get("steps_run") or 0) for t in trials))
    )
    details = [t.get("details") or {} for t in trials]
    images = int(rt.get("train_images") or 0) + int(
        check.get("train_images", sum(int(d.get("train_images") or 0) for d in details))
    )
    seconds = float(rt.get("seconds") or 0.0) + float(
        check.get("seconds", sum(float(d.get("seconds") or 0.0) for d in details))
    )
    final = (phases.get("train") or {}).get("run")
    retries = 0
    for k in range(int((data.get("train_attempt") or {}).get("n") or 0)):
        name = "train" if k == 0 else f"train-retry{k}"
        if name == final:
            continue
        attempt = read_json(run.path / name / "summary.json") or {}
        done = int(attempt.get("iterations") or 0)
        retries += done
        images += done * int(run.config.get("batch_size") or 0)
        seconds += float(attempt.get("wall_time") or 0.0)
    return {"iterations": iterations + retries, "images": images, "seconds": seconds}


def _damaged(path: Path, why: str) -> UserError:
    return UserError(
        f"{path} {why}; the run directory {path.parent} is damaged. Delete that run "
        "directory (reproduce runs it again) or restore the file, then report again."
    )


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None if there is no such file); a damaged file is a
    :class:`UserError` naming it."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise _damaged(path, f"is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _damaged(path, f"holds a JSON {type(obj).__name__}, not an object")
    return obj


_NUMBER = (int, float)
# The fields the report reads from config.json and summary.json, with their types
# (None is allowed for every one: a field may be absent or null).
_CONFIG_TYPES = {
    "seed": int, "iterations": int, "batch_size": int, "train_subset": int, "model": str,
    "dataset": str, "policy": str, "policy_params": dict, "val_size": int,
}  # fmt: skip
_SUMMARY_TYPES = {
    "status": str, "iterations": _NUMBER, "final_test_acc": _NUMBER, "final_test_loss": _NUMBER,
    "final_val_acc": _NUMBER, "final_train_loss": _NUMBER, "best_test_acc": _NUMBER,
    "wall_time": _NUMBER, "train_images": _NUMBER, "diverged_lr": _NUMBER,
}  # fmt: skip


def _check_fields(path: Path, obj: dict[str, Any], types: dict[str, Any]) -> None:
    for key, kind in types.items():
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise _damaged(path, f"has {key} = {value!r} ({type(value).__name__})")


def read_table(path: Path) -> list[dict[str, Any]]:
    """A CSV of the run (metrics.csv, estimates.csv): numbers or empty cells only."""
    if not path.exists():
        return []
    try:
        rows = read_csv(path)
    except (OSError, ValueError, csv.Error) as exc:  # ValueError: not UTF-8
        raise _damaged(path, f"is not a readable CSV ({exc})") from None
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        if None in row:
            raise _damaged(path, f"has more cells than its header on line {number}")
        for key, value in row.items():
            if key is None or not (value is None or isinstance(value, _NUMBER)):
                raise _damaged(
                    path, f"has {value!r} in column {key!r} on line {number}, where numbers belong"
                )
        if not isinstance(row.get("iteration"), int):
            raise _damaged(path, f"has no integer iteration on line {number}")
    return rows


def scan(results_dir: str | Path) -> dict[str, list[RunRecord]]:
    """Every run directory ``<row>/seed<k>/`` under ``results_dir``: row -> runs by seed."""
    root = Path(results_dir)
    rows: dict[str, list[RunRecord]] = {}
    for config in sorted(root.glob("*/seed*/config.json")):
        if _SEED_DIR.fullmatch(config.parent.name):
            record = read_run(config.parent)
            rows.setdefault(record.row, []).append(record)
    for fit in sorted(root.glob(f"*/seed*/{FIT_FILE}")):  # `superconv fit` rows
        if _SEED_DIR.fullmatch(fit.parent.name) and not (fit.parent / "config.json").exists():
            record = read_fit_run(fit.parent)
            rows.setdefault(record.row, []).append(record)
    for runs in rows.values():
        runs.sort(key=lambda r: r.seed)
    return rows


# ----------------------------------------------------------------------------- cost
def tuning_cost(runs: Iterable[RunRecord]) -> dict[str, int]:
    """Runs, iterations and training images spent by tuning runs (sweep trials, range tests).

    Counted from what the runs did: a diverged or stopped run counts the iterations it ran.
    Only runs that ended (wrote their summary) are counted; runs still going or
    killed are counted apart as ``unfinished``, since what they spent is not recorded.
    """
    ended = unfinished = iterations = images = 0
    for r in runs:
        if r.status == "unfinished":
            unfinished += 1
            continue
        ended += 1
        done = int(r.summary.get("iterations") or 0)
        iterations += done
        images += done * int(r.config.get("batch_size", 0))
    return {"runs": ended, "iterations": iterations, "images": images, "unfinished": unfinished}
