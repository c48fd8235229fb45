"""`superconv demo --quick` end to end, checked against the run folders it wrote."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

from superconv.cli import main
from superconv.demo import QUICK_PLAN, DemoPlan, demo_config
from superconv.records import read_csv

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    threads = torch.get_num_threads()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    return out, code, printed.getvalue(), threads


def summary(run):
    return json.loads((run / "summary.json").read_text())


def test_quick_demo_writes_its_files(quick_demo):
    out, code, _, _ = quick_demo
    assert code == 0
    for name in ("accuracy.png", "schedule_one_cycle.png", "schedule_multistep.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert (out / "range-test" / "range_test.png").read_bytes()[:8] == PNG
    text = (out / "demo.md").read_text()
    assert "![test accuracy](accuracy.png)" in text and "range-test/range_test.png" in text
    # where the disk space went: the finished runs' checkpoints, with their size
    checkpoints = sorted((out / "runs").glob("*/checkpoint.pt"))
    size = sum(c.stat().st_size for c in checkpoints) / 1e6
    assert f"The {len(checkpoints)} runs' final checkpoints ({size:.0f} MB)" in quick_demo[2]


def test_baseline_lr_is_the_sweeps_best_by_validation_accuracy(quick_demo):
    out, _, printed, _ = quick_demo
    record = json.loads((out / "demo.json").read_text())
    sweep = {}
    for entry in record["sweep"]:
        run = out / "runs" / f"multistep-lr{entry['lr']:g}-seed0"
        s = summary(run)
        sweep[entry["lr"]] = s["final_val_acc"] if s["status"] == "finished" else None
    finished = {lr: acc for lr, acc in sweep.items() if acc is not None}
    assert record["multistep"]["lr"] == max(finished, key=finished.get)
    assert set(sweep) == set(QUICK_PLAN.sweep_lrs)
    assert f"picked lr {record['multistep']['lr']:g}" in printed


def test_printed_accuracies_are_those_of_the_final_runs(quick_demo):
    out, _, printed, _ = quick_demo
    record = json.loads((out / "demo.json").read_text())
    for side, label in (("one_cycle", "1cycle"), ("multistep", "multistep")):
        (run,) = record[side]["runs"]
        s = summary(Path(run))
        assert s["status"] == "finished"
        # Both policies train for the same number of iterations (the equal budget).
        assert read_csv(f"{run}/metrics.csv")[-1]["iteration"] == QUICK_PLAN.iterations
        line = next(x for x in printed.splitlines() if x.startswith(label))
        assert (
            f"{s['final_test_acc']:.2f}% test accuracy in {QUICK_PLAN.iterations} iterations"
            in line
        )
    one = record["one_cycle"]
    assert f"max_lr {one['lr']:.3g}" in printed


def test_one_cycle_uses_the_range_tests_suggestion_halved_per_divergence(quick_demo):
    out, _, printed, _ = quick_demo
    record = json.loads((out / "demo.json").read_text())
    suggested = record["range_test"]["suggestion"]["max_lr"]
    halvings = len(record["one_cycle"]["notes"])
    assert record["one_cycle"]["lr"] == pytest.approx(suggested / 2**halvings)
    assert len(re.findall(r"diverged at iteration", printed)) >= halvings
    # The range test is counted in 1cycle's tuning cost.
    curve = json.loads((out / "range-test" / "range_test.json").read_text())["curve"]
    assert record["one_cycle"]["tuning_iterations"] >= len(curve["losses"])


def test_choices_never_see_the_test_set(quick_demo):
    out, _, _, _ = quick_demo
    record = json.loads((out / "range-test" / "range_test.json").read_text())
    assert record["val_images"] == QUICK_PLAN.val_size
    config = json.loads((out / "range-test" / "config.json").read_text())["train_config"]
    assert config["val_size"] == QUICK_PLAN.val_size


def test_demo_restores_the_thread_count(quick_demo):
    assert torch.get_num_threads() == quick_demo[3]


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_demo_configs_are_valid_and_budgets_consistent():
    # 3 epochs of the 9,000 training images at batch 64; both plans validate.
    plan = DemoPlan()
    assert plan.iterations * plan.batch_size == pytest.approx(3 * plan.train_images, rel=0.01)
    for p in (plan, QUICK_PLAN):
        demo_config(p, device="cpu").validate()
