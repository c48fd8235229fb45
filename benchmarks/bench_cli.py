#!/usr/bin/env python
"""How long ``superconv --help`` and each subcommand's ``--help`` take, in fresh processes.

The target (issue 23): under 1 s each on 2 CPU cores; building the parser imports
neither torch nor matplotlib. Each command runs ``--repeats`` times in a new Python
process; the JSON holds every time, the median and the slowest, and whether torch
was imported. Writes ``results/bench/cli-<cpus>-<time>.json`` (or ``--out``)::

    python benchmarks/bench_cli.py
    python benchmarks/bench_cli.py --repeats 3 --out /tmp/cli.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("", "lr-find", "train", "fit", "demo", "data", "reproduce", "report")
TARGET_S = 1.0


def time_help(sub: str, env: dict[str, str]) -> float:
    argv = [sys.executable, "-m", "superconv", *([sub] if sub else []), "--help"]
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from superconv.records import atomic_write_json, environment

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    check = (
        "import sys; from superconv.cli import build_parser; build_parser(); "
        "print(','.join(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    heavy = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    rows = []
    for sub in SUBCOMMANDS:
        times = [time_help(sub, env) for _ in range(args.repeats)]
        rows.append(
            {
                "command": f"superconv {sub} --help".replace("  ", " "),
                "times_s": [round(t, 4) for t in times],
                "median_s": round(statistics.median(times), 4),
                "max_s": round(max(times), 4),
                "met": max(times) < TARGET_S,
            }
        )
        print(
            f"{rows[-1]['command']:<32} median {rows[-1]['median_s']:.3f} s  max {rows[-1]['max_s']:.3f} s"
        )
    result = {
        "benchmark": "cli-help",
        "target_s": TARGET_S,
        "cpus": os.cpu_count(),
        "parser_imports_heavy": heavy.split(",") if heavy else [],
        "all_met": all(r["met"] for r in rows) and not heavy,
        "commands": rows,
        "environment": environment("cpu"),
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "results" / "bench" / f"cli-cpu{os.cpu_count()}-{stamp}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
