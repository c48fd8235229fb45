"""The training loop: resume is bit-identical, divergence and SIGINT keep finished work."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from helpers import metrics_without_time

from superconv import checkpoint as ckpt
from superconv.errors import CheckpointError, DivergenceError, RunDirError, UserError
from superconv.records import read_csv
from superconv.train import TrainConfig, train

# A tiny, fast run: LeNet on the MNIST subset shipped in the package.
TINY = dict(
    model="lenet",
    dataset="mnist-demo",
    iterations=40,
    batch_size=32,
    policy="one_cycle",
    policy_params={"max_lr": 0.02},
    eval_every=10,
    checkpoint_every=10,
    eval_batch_size=1000,
    flip=False,
    deterministic=True,
    device="cpu",
)


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


class _Crash(Exception):
    pass


def crash_at(step_to_crash: int):
    def observer(step, model, optimizer, metrics):
        if step == step_to_crash:
            raise _Crash(f"simulated crash at {step}")

    return observer


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    result = train(tiny(), out / "run", progress=False)
    return out / "run", result


def test_run_directory_contents(reference_run):
    run_dir, result = reference_run
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.json",
        "env.json",
        "metrics.csv",
        "summary.json",
        "checkpoint.pt",
    }
    rows = read_csv(run_dir / "metrics.csv")
    assert [r["iteration"] for r in rows] == [10, 20, 30, 40]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0
    # The LR column is the policy's value at the recorded iteration (1cycle, 40 steps).
    from superconv.schedules import OneCycle

    assert rows[-1]["lr"] == pytest.approx(OneCycle(0.02, 40)(39), rel=1e-12)
    # Trained: better than chance (10 classes) after 40 steps of batch 32.
    assert rows[-1]["test_acc"] > 50.0


def test_resume_after_crash_is_bit_identical(reference_run, tmp_path):
    run_dir, _ = reference_run
    with pytest.raises(_Crash):
        train(tiny(), tmp_path / "run", observers=[crash_at(25)], progress=False)
    # The crash came after the checkpoint of iteration 20: rows up to 20 are kept.
    assert [r["iteration"] for r in read_csv(tmp_path / "run" / "metrics.csv")] == [10, 20]
    train(tiny(), tmp_path / "run", resume=True, progress=False)
    assert metrics_without_time(tmp_path / "run" / "metrics.csv") == metrics_without_time(
        run_dir / "metrics.csv"
    )


def test_resume_with_dropout_and_estimator_is_bit_identical(tmp_path):
    cfg = tiny(model="resnet8", dataset="mnist-demo", dropout=0.2, estimator_k=3, iterations=30)
    train(cfg, tmp_path / "a", progress=False)
    with pytest.raises(_Crash):
        train(cfg, tmp_path / "b", observers=[crash_at(17)], progress=False)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    assert metrics_without_time(tmp_path / "a" / "metrics.csv") == metrics_without_time(
        tmp_path / "b" / "metrics.csv"
    )
    assert read_csv(tmp_path / "a" / "estimates.csv") == read_csv(tmp_path / "b" / "estimates.csv")
    assert len(read_csv(tmp_path / "a" / "estimates.csv")) >= 5


def test_accumulation_splits_the_batch_and_keeps_the_updates(reference_run, tmp_path):
    """LeNet has no BN: four micro-batches of 8 give the 32-image batch's gradients (up to
    float rounding), so the run follows the reference run closely, not bit for bit."""
    run_dir, _ = reference_run
    train(tiny(accumulation_steps=4), tmp_path / "run", progress=False)
    ref, acc = read_csv(run_dir / "metrics.csv"), read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["iteration"] for r in acc] == [r["iteration"] for r in ref]
    for a, b in zip(ref, acc):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-4)
        assert float(b["test_loss"]) == pytest.approx(float(a["test_loss"]), rel=1e-4)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["accumulation_steps"] == 4


def test_fp16_trains_with_a_grad_scaler_and_resumes_bit_identically(tmp_path):
    cfg = tiny(precision="fp16", iterations=60, checkpoint_every=20)
    train(cfg, tmp_path / "a", progress=False)
    state = ckpt.load(tmp_path / "a" / "checkpoint.pt")
    assert state["scaler"]["scale"] > 0  # the GradScaler's state travels with the run
    with pytest.raises(_Crash):
        train(cfg, tmp_path / "b", observers=[crash_at(47)], progress=False)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    assert metrics_without_time(tmp_path / "a" / "metrics.csv") == metrics_without_time(
        tmp_path / "b" / "metrics.csv"
    )
    fp32 = train(tiny(iterations=60), tmp_path / "c", progress=False).summary
    fp16 = json.loads((tmp_path / "a" / "summary.json").read_text())
    # it learns as fp32 does: fp16's rounding makes the two runs differ step by step
    # (at 30 steps, where accuracy climbs fast, by 6 points), so the check is on where
    # they are at 60 (fp32 91.1%, fp16 90.65% when written)
    assert fp16["final_train_loss"] == pytest.approx(fp32["final_train_loss"], rel=0.15)
    assert fp16["final_test_acc"] == pytest.approx(fp32["final_test_acc"], abs=2.0)


def test_sigint_saves_a_checkpoint_and_resume_matches(reference_run, tmp_path):
    run_dir, _ = reference_run

    def interrupt(step, model, optimizer, metrics):
        if step == 14:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt, match="interrupted at iteration 15"):
        train(tiny(), tmp_path / "run", observers=[interrupt], progress=False)
    assert ckpt.load(tmp_path / "run" / "checkpoint.pt")["step"] == 15
    train(tiny(), tmp_path / "run", resume=True, progress=False)
    assert metrics_without_time(tmp_path / "run" / "metrics.csv") == metrics_without_time(
        run_dir / "metrics.csv"
    )


def test_divergence_names_step_and_lr_and_keeps_work(tmp_path):
    cfg = tiny(policy="constant", policy_params={"lr": 0.002}, iterations=40)
    # Diverge on purpose from iteration 25 on: an LR of 1e6 from there.
    cfg = cfg.replace(
        policy="piecewise_values", policy_params={"values": [0.002, 1e6], "boundaries": [25]}
    )
    with pytest.raises(DivergenceError) as info:
        train(cfg, tmp_path / "run", progress=False)
    err = info.value
    assert err.step >= 25 and err.lr == 1e6
    assert f"iteration {err.step}" in str(err)
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["iteration"] for r in rows] == [10, 20]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["iterations"] == err.step
    state = ckpt.load(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_run_dir_refuses_another_run_and_a_finished_one(reference_run, tmp_path):
    run_dir, _ = reference_run
    with pytest.raises(RunDirError, match="already holds a different run.*iterations"):
        train(tiny(iterations=50), run_dir, progress=False)
    with pytest.raises(RunDirError, match="already holds this run. Resume it"):
        train(tiny(), run_dir, progress=False)
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(tiny(), tmp_path / "empty", resume=True, progress=False)


def test_resume_refuses_a_corrupt_checkpoint(tmp_path):
    with pytest.raises(_Crash):
        train(tiny(), tmp_path / "run", observers=[crash_at(12)], progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        train(tiny(), tmp_path / "run", resume=True, progress=False)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    with pytest.raises(_Crash):
        train(tiny(), tmp_path / "run", observers=[crash_at(12)], progress=False)
    with pytest.raises(_Crash):
        train(tiny(model="resnet8"), tmp_path / "other", observers=[crash_at(12)], progress=False)
    os.replace(tmp_path / "other" / "checkpoint.pt", tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="different model"):
        train(tiny(), tmp_path / "run", resume=True, progress=False)


def test_validation_split_adds_val_columns(tmp_path):
    result = train(tiny(val_size=500, iterations=10), tmp_path / "run", progress=False)
    row = result.metrics[-1]
    assert row["val_acc"] is not None and row["test_acc"] is not None
    assert result.summary["train_images"] == 10_000 - 500


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"iterations": 0}, "iterations must be an integer >= 1"),
        ({"batch_size": 20_000}, "batch_size .* is larger than the training data"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"optimizer": "sdg"}, "did you mean 'sgd'"),
        ({"checkpoint_every": 15}, "multiple of eval_every"),
        ({"momentum": 1.5}, "momentum must be in"),
        ({"ghost_batch": 5}, "ghost_batch .* must divide"),
        ({"accumulation_steps": 3}, r"accumulation_steps \(3\) must divide batch_size \(32\)"),
        ({"accumulation_steps": 0}, "accumulation_steps must be an integer >= 1"),
        ({"device": "cuda"} if not torch.cuda.is_available() else {"device": "bogus"}, "device"),
        ({"train_subset": 20_000}, "train_subset .* is larger"),
        ({"policy": "1cycle"}, "did you mean"),
        ({"policy_params": {"min_lr": 3.0, "max_lr": 0.1}, "policy": "clr"}, "min_lr"),
        ({"model": "resnet57"}, "depth must be 6n\\+2.*nearest valid depth: 56"),
        ({"model": "resnt56"}, "did you mean .resnet56"),
    ],
)
def test_impossible_configs_are_refused(tmp_path, changes, message):
    with pytest.raises(UserError, match=message):
        train(tiny(**changes), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_config_from_dict_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(
        UserError, match="unknown config key.*'iteration'.*did you mean 'iterations'"
    ):
        TrainConfig.from_dict({"iteration": 10})
    with pytest.raises(UserError, match="'batch_size' must be int"):
        TrainConfig.from_dict({"batch_size": "128"})
    with pytest.raises(UserError, match="'weight_decay' must be float"):
        TrainConfig.from_dict({"weight_decay": True})
    assert TrainConfig.from_dict({"weight_decay": 0}).weight_decay == 0.0
    assert TrainConfig.from_dict({"ghost_batch": None}).ghost_batch is None


def test_config_round_trips_through_json():
    cfg = tiny(policy_params={"max_lr": 0.5, "momentum": [0.95, 0.85]})
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_a_compile_failure_at_the_first_step_falls_back_to_eager(tmp_path, monkeypatch):
    eager = train(tiny(iterations=20), tmp_path / "eager", progress=False)

    def broken_compile(model, *args, **kwargs):
        def fails(x):
            raise RuntimeError("simulated inductor build failure")

        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile failed .*simulated.*running eager"):
        result = train(tiny(iterations=20, compile=True), tmp_path / "compiled", progress=False)
    # The fallback run is the eager run, bit for bit (all but wall time).
    assert metrics_without_time(tmp_path / "compiled" / "metrics.csv") == metrics_without_time(
        tmp_path / "eager" / "metrics.csv"
    )
    assert result.summary["final_test_acc"] == eager.summary["final_test_acc"]
