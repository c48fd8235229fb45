"""Collapse detection: the pure rule, a replay of every committed run, and the loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from superconv import checkpoint as ckpt
from superconv.collapse import LOSS_FACTOR, check_collapse, ended_at_chance, lr_peak_step
from superconv.records import read_csv

RESULTS = Path(__file__).resolve().parents[1] / "results"


def row(it, loss, acc, train_acc=50.0, lr=0.1, **more):
    return {
        "iteration": it,
        "lr": lr,
        "train_loss": loss,
        "test_acc": acc,
        "train_acc": train_acc,
        **more,
    }


def test_a_healthy_run_is_not_stopped():
    rows = [row(100 * i, 2.3 / i, min(99.0, 20.0 * i)) for i in range(1, 11)]
    assert check_collapse(rows, iterations=1000, num_classes=10) is None


def test_a_loss_far_above_its_best_and_above_chance_stops_the_run():
    rows = [row(100, 2.0, 40.0), row(200, 0.2, 90.0), row(300, 8e13, 90.0, lr=50.0)]
    found = check_collapse(rows, iterations=1000, num_classes=10)
    assert found.rule == "loss" and found.iteration == 300 and found.lr == 50.0
    assert "iteration 300" in found.what and "lr 50" in found.what


def test_a_loss_ten_times_its_best_but_below_chance_is_not_a_collapse():
    # a CLR peak may raise a small loss many times over: still far better than guessing
    rows = [row(100, 0.5, 80.0), row(200, 0.02, 99.0), row(300, 1.0, 95.0)]
    assert 1.0 > LOSS_FACTOR * 0.02
    assert check_collapse(rows, iterations=1000, num_classes=10) is None


def test_accuracy_at_chance_stops_past_the_grace_and_the_warmup_only():
    rows = [row(50, 2.3, 10.0, train_acc=10.0), row(200, 2.3, 12.0, train_acc=11.0)]
    assert check_collapse(rows[:1], iterations=1000, num_classes=10) is None  # first 10%
    # a short run at chance before iteration 100 has not collapsed: it may not have begun
    assert check_collapse(rows[:1], iterations=60, num_classes=10) is None
    assert check_collapse(rows, iterations=1000, num_classes=10, warmup_steps=300) is None
    found = check_collapse(rows, iterations=1000, num_classes=10)
    assert found.rule == "accuracy" and found.iteration == 200
    # the validation accuracy is the one read when there is one
    with_val = [row(200, 2.3, 90.0, train_acc=11.0, val_acc="12.0")]
    assert "validation accuracy" in check_collapse(with_val, iterations=1000, num_classes=10).what


def test_a_network_that_learns_but_evaluates_at_chance_is_not_collapsed():
    # Table 1, MAF 0.999: slow BN statistics, training accuracy far above chance
    rows = [row(200 * i, 1.8, 11.0, train_acc=30.0 + i) for i in range(1, 6)]
    assert check_collapse(rows, iterations=1000, num_classes=10) is None


def test_lr_peak_step_is_the_end_of_the_warmup():
    from superconv.schedules import build_policy

    assert lr_peak_step(build_policy("constant", 100, lr=0.1)["lr"], 100) == 0
    peak = lr_peak_step(build_policy("one_cycle", 1000, max_lr=1.0)["lr"], 1000)
    assert 200 <= peak <= 500


def _committed_runs():
    # ended runs only (a run still training in a working tree has no summary.json yet)
    return sorted(
        p.parent for p in RESULTS.rglob("metrics.csv") if (p.parent / "summary.json").exists()
    )


def _replay(run: Path):
    from superconv.schedules import build_policy

    config = json.loads((run / "config.json").read_text())
    rows = read_csv(run / "metrics.csv")
    policy = build_policy(config["policy"], config["iterations"], **config["policy_params"])
    classes = 100 if config["dataset"] == "cifar100" else 10
    return check_collapse(
        rows,
        iterations=config["iterations"],
        num_classes=classes,
        warmup_steps=lr_peak_step(policy["lr"], config["iterations"]),
    )


# Runs that sat at chance and that the rule did not stop: kept visible, not hidden. A
# 49-step first-rung run at batch 512 (evaluations at 13, 26, 39, 49, all ~10%) ended
# "finished" at 10.12% (committed 2026-12-03); the rule's patience does not fit a run
# this short. ended_at_chance sees them once they end (fit drops such a candidate).
KNOWN_MISSES = {
    "suggest/reduced/t9-resnet20-b512-short-max_lr0.8/seed0",
    "suggest/reduced/t9-resnet20-b512-short-max_lr3.2/seed0",  # 12.69%, the same way
}


def test_replay_of_every_committed_run():
    runs = _committed_runs()
    assert len(runs) > 50
    stopped = {}
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        found = _replay(run)
        if found is not None:
            stopped[str(run.relative_to(RESULTS))] = (summary, found)
        elif str(run.relative_to(RESULTS)) in KNOWN_MISSES:
            assert summary["final_test_acc"] <= 15.0, run  # still a miss: update the list
        elif summary.get("status") == "finished" and summary.get("final_test_acc") is not None:
            assert summary["final_test_acc"] > 15.0 or "maf0.999" in str(run), run
    # every run the rule stops ended diverged (NaN) or at chance; none that finished well
    # (the suggestion benchmark's sweeps add runs above the edge of stability on purpose)
    for name, (summary, _) in stopped.items():
        ended = summary.get("final_val_acc", summary.get("final_test_acc"))
        assert summary.get("status") == "diverged" or (ended is not None and ended <= 15.0), name
    # the fair comparison's run that ended at chance without a NaN is stopped, at its first
    # evaluation past the first 10%
    summary, found = stopped["fair-comparison/reduced/sweep-multistep-lr0.8/seed0"]
    assert summary["final_test_acc"] == 10.0 and found.iteration == 294


def test_resnet8_at_max_lr_50_collapses_with_exit_3_and_keeps_the_checkpoint(tmp_path, capsys):
    """The issue's case (resnet8, mnist-demo, one_cycle max_lr=50, 200 iterations), which
    ended 'finished' at 10% test accuracy; at batch 64 to be quick on a CPU."""
    from superconv.cli import main

    out = tmp_path / "r8"
    argv = [
        "train", "--model", "resnet8", "--dataset", "mnist-demo", "--policy", "one_cycle",
        "--policy-param", "max_lr=50", "--iterations", "200", "--batch-size", "64",
        "--eval-every", "50", "--checkpoint-every", "50", "--device", "cpu",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "collapsed" in err and "lower max_lr" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    stopped_at = summary["iterations"]
    assert stopped_at < 200 or summary["final_test_acc"] <= 15.0
    rows = read_csv(out / "metrics.csv")
    assert rows[-1]["iteration"] == stopped_at
    if (out / "checkpoint.pt").exists():  # the last one from before the blow-up
        state = ckpt.load(out / "checkpoint.pt")
        assert state["step"] < stopped_at


@pytest.mark.parametrize("lr", [1e6])
def test_a_lenet_that_goes_nan_exits_3(tmp_path, capsys, lr):
    from superconv.cli import main

    out = tmp_path / "nan"
    argv = [
        "train", "--model", "lenet", "--dataset", "mnist-demo", "--policy", "constant",
        "--policy-param", f"lr={lr}", "--iterations", "30", "--batch-size", "32",
        "--eval-every", "10", "--checkpoint-every", "10", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 3
    assert "NaN" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and not math.isnan(summary["iterations"])


def test_a_finished_run_at_chance_is_seen_at_its_end():
    # the short runs the loop's rule let through ...
    for name in KNOWN_MISSES:
        found = ended_at_chance(read_csv(RESULTS / name / "metrics.csv"), num_classes=10)
        assert found is not None and found.rule == "end" and "ended at chance" in found.what
    # ... and no committed run that finished above chance + 5 points
    for run in _committed_runs():
        summary = json.loads((run / "summary.json").read_text())
        ended = summary.get("final_val_acc", summary.get("final_test_acc"))
        rows = read_csv(run / "metrics.csv")
        if summary.get("status") == "finished" and ended is not None and ended > 15.0:
            assert ended_at_chance(rows, num_classes=10) is None, run
    # a network that learns its batches but evaluates at chance (slow BN statistics)
    assert ended_at_chance([row(49, 2.0, 10.0, train_acc=40.0)], num_classes=10) is None
    assert ended_at_chance([row(49, 2.3, 10.0, train_acc=10.0)], num_classes=100) is None
    assert ended_at_chance([{"iteration": 10, "train_loss": 2.3}], num_classes=10) is None
