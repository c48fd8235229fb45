"""Helpers shared by the command-line tests (imported as ``helpers``: tests/ is on sys.path)."""

from __future__ import annotations

from superconv.records import read_csv

# LeNet on the bundled MNIST subset, as Caffe's example: pixels / 255, no mirroring.
# One thread: LeNet gains nothing from more, and shared cores slow it down a lot.
DATA = [
    "--model", "lenet", "--dataset", "mnist-demo", "--normalize", "unit", "--no-flip",
    "--batch-size", "32", "--eval-batch-size", "1000", "--device", "cpu", "--threads", "1",
    "--no-progress",
]  # fmt: skip
TINY = [*DATA, "--eval-every", "10", "--checkpoint-every", "10"]


def tiny_train(out, *extra) -> list[str]:
    """Arguments of a 30-iteration 1cycle ``superconv train`` into ``out``."""
    return [
        "train", *TINY, "--iterations", "30", "--policy", "one_cycle",
        "--policy-param", "max_lr=0.02", "--out", str(out), *extra,
    ]  # fmt: skip


def metrics_without_time(path) -> list[dict]:
    """metrics.csv rows without the wall-time column (the resume tests compare the rest)."""
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in read_csv(path)]
