"""Stage the small result files of ended runs for a commit; unstage those of runs in progress.

Usage (from the repository root): ``python tools/stage_results.py [results]``

Long reproductions run in the background while work is committed. A commit must
hold only runs that ended (summary.json says finished or diverged) with their
small files, plus each folder's manifest.json, report.md and plots/, and the
results index; checkpoints (*.pt) never (.gitignore). Files of a run that is
still going are taken out of the index, so a fresh clone reruns it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from superconv.runs import DONE, read_fit_run  # DONE: the statuses reproduce counts as ended


def status(run: Path) -> str:
    try:
        return json.loads((run / "summary.json").read_text(encoding="utf-8")).get("status", "")
    except (OSError, ValueError):
        return "unfinished"


def fit_status(run: Path) -> str:
    """A ``superconv fit`` row's seed (``fit.json``, its phases in subfolders) has ended
    when its training phase has."""
    try:
        return read_fit_run(run).status
    except Exception:  # a damaged or half-written fit.json: not ended
        return "unfinished"


def main(root: str = "results") -> int:
    results = Path(root)
    add, drop = [], []
    # a run folder holds config.json; a `superconv fit` seed holds fit.json (its phases below)
    for marker, state in (("config.json", status), ("fit.json", fit_status)):
        for found in sorted(results.glob(f"*/*/*/seed*/{marker}")):
            run = found.parent
            (add if state(run) in DONE else drop).append(run)
    for folder in sorted({p.parent for p in results.glob("*/*/manifest.json")}):
        add += [
            p
            for p in (folder / "manifest.json", folder / "report.md", folder / "plots")
            if p.exists()
        ]
    if (results / "README.md").exists():
        add.append(results / "README.md")
    for run in drop:
        subprocess.run(
            ["git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", str(run)], check=True
        )
    if add:
        subprocess.run(["git", "add", "--", *map(str, add)], check=True)
    print(
        f"staged {sum(1 for p in add if p.name.startswith('seed'))} ended run(s); "
        f"left out {len(drop)} in progress: {', '.join(str(r) for r in drop) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
