"""Make ``tests/fixtures/report/``: run directories of real tiny runs for the report tests.

Runs :func:`superconv.runner.reproduce` at the small scale for

- ``mnist-lenet`` with 2 seeds (LeNet on the MNIST subset shipped in the package:
  sweeps, tuned rows, the paper's numbers, mean ± std over seeds),
- ``fig2b`` with 1 seed (LR range tests; needs CIFAR-10),
- ``fig5a`` with 1 seed (eq. 8 estimates; needs CIFAR-10),

then copies each results folder into the fixture folder without checkpoints, the
report and its plots (the report reads none of them; the tests regenerate the
report). Every number in the fixtures comes from these runs; none is typed in.

Usage (from the repository root; takes a few minutes on a CPU)::

    SUPERCONV_DATA=/path/to/data PYTHONPATH=src python tools/make_report_fixture.py
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "report"
RUNS = (("mnist-lenet", 2), ("fig2b", 1), ("fig5a", 1))
SKIPPED = ("checkpoint.pt", "report.md", "plots", "range_test.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help="fixture folder to replace")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    from superconv.paper import get_experiment
    from superconv.runner import reproduce

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for exp_id, seeds in RUNS:
            reproduce(get_experiment(exp_id), seeds=seeds, scale="small", out=tmp, device="cpu", progress=False)
        if args.out.exists():
            shutil.rmtree(args.out)
        for exp_id, _ in RUNS:
            shutil.copytree(
                Path(tmp) / exp_id / "small",
                args.out / exp_id / "small",
                ignore=shutil.ignore_patterns(*SKIPPED),
            )
    print(f"fixtures written to {args.out}")


if __name__ == "__main__":
    main()
