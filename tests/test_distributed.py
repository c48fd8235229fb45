"""DDP under the gloo backend with 2 CPU processes (spawned from pytest, seconds each)."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from superconv import checkpoint as ckpt
from superconv.errors import UserError
from superconv.records import read_csv
from superconv.train import TrainConfig, build, train

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

BASE = dict(
    model="resnet8",
    dataset="mnist-demo",
    batch_size=128,
    iterations=2,
    eval_every=2,
    checkpoint_every=2,
    eval_batch_size=1000,
    policy="constant",
    policy_params={"lr": 0.1},
    flip=False,
    device="cpu",
    deterministic=True,
    # float64: in float32 the stem's BN backward cancels badly on these images (its
    # gradient is ~1e-3 from a float64 reference), which would swamp a 1e-5 check.
    precision="fp64",
)


def config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**BASE, **changes})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, task: str, args: dict) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        if task == "train":
            observers = []
            if args.get("crash_at") is not None:

                def crash(step, model, optimizer, metrics, at=args["crash_at"]):
                    if step == at:
                        raise RuntimeError("simulated crash")

                observers.append(crash)
            try:
                train(
                    TrainConfig.from_dict(args["config"]),
                    args["run_dir"],
                    resume=args.get("resume", False),
                    observers=observers,
                    progress=False,
                )
            except RuntimeError as exc:
                if "simulated crash" not in str(exc):
                    raise
                # Both ranks crash at the same step; meet before tearing the group down,
                # so that neither closes its gloo connections while the other still
                # works on the crash (a rank aborted with "terminate called without an
                # active exception" twice in CI under load, never when run alone).
                dist.barrier()
        elif task == "range_test":
            _range_test_worker(rank, args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _range_test_worker(rank: int, args: dict) -> None:
    from superconv.distributed import mean_across_ranks
    from superconv.range_test import range_test

    pieces = build(TrainConfig.from_dict(args["config"]))
    module, optimizer = pieces.module, pieces.optimizer
    before_model = {k: v.clone() for k, v in module.state_dict().items()}
    before_opt = optimizer.state_dict()
    before_rng = torch.get_rng_state()
    curve = range_test(
        pieces.model,
        optimizer,
        F.cross_entropy,
        pieces.loader,
        pieces.eval_loaders["test"],
        start_lr=0.0,
        end_lr=1.0,
        num_steps=12,
        eval_every=4,
        eval_batches=1,
        progress=False,
        reduce_mean=mean_across_ranks,
    )
    after = module.state_dict()
    restored = all(torch.equal(before_model[k], after[k]) for k in before_model)
    restored &= optimizer.state_dict()["param_groups"] == before_opt["param_groups"]
    restored &= torch.equal(torch.get_rng_state(), before_rng)
    out = {"restored": bool(restored), "curve": curve.to_dict()}
    with open(os.path.join(args["out"], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)


def spawn(task: str, args: dict, world_size: int = 2) -> None:
    mp.spawn(_worker, args=(world_size, _free_port(), task, args), nprocs=world_size, join=True)


def model_state(run_dir) -> dict:
    return ckpt.load(os.path.join(run_dir, "checkpoint.pt"))["model"]


def assert_states_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def test_per_rank_bn_equals_ghost_bn_over_chunks(tmp_path):
    # One process, ghost BN over chunks of 64 in a batch of 128 ...
    train(config(ghost_batch=64), tmp_path / "single", progress=False)
    # ... equals 2 ranks x 64 with each rank's own (unsynchronised) BN, running stats included.
    spawn("train", {"config": config().to_dict(), "run_dir": str(tmp_path / "ddp")})
    assert_states_close(model_state(tmp_path / "single"), model_state(tmp_path / "ddp"))
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_sync_bn_equals_plain_bn_over_the_global_batch(tmp_path):
    train(config(), tmp_path / "single", progress=False)
    spawn("train", {"config": config(sync_bn=True).to_dict(), "run_dir": str(tmp_path / "ddp")})
    assert_states_close(model_state(tmp_path / "single"), model_state(tmp_path / "ddp"))
    # And it is not per-rank BN: that one differs from the plain full-batch run.
    spawn("train", {"config": config().to_dict(), "run_dir": str(tmp_path / "ddp_rank")})
    with pytest.raises(AssertionError):
        assert_states_close(model_state(tmp_path / "single"), model_state(tmp_path / "ddp_rank"))


def test_range_test_restores_state_on_both_ranks_and_agrees(tmp_path):
    spawn("range_test", {"config": config().to_dict(), "out": str(tmp_path)})
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["restored"] for r in ranks)
    assert ranks[0]["curve"] == ranks[1]["curve"]  # decided on all-reduced values
    assert len(ranks[0]["curve"]["lrs"]) == 12 and len(ranks[0]["curve"]["val_accs"]) == 3


def test_stop_and_resume_under_ddp_matches_uninterrupted(tmp_path):
    cfg = config(iterations=6).to_dict()
    spawn("train", {"config": cfg, "run_dir": str(tmp_path / "a")})
    spawn("train", {"config": cfg, "run_dir": str(tmp_path / "b"), "crash_at": 3})
    assert ckpt.load(tmp_path / "b" / "checkpoint.pt")["step"] == 2
    assert not (tmp_path / "b" / "summary.json").exists()
    spawn("train", {"config": cfg, "run_dir": str(tmp_path / "b"), "resume": True})

    def no_time(path):
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in read_csv(path)]

    assert no_time(tmp_path / "a" / "metrics.csv") == no_time(tmp_path / "b" / "metrics.csv")
    assert_states_close(model_state(tmp_path / "a"), model_state(tmp_path / "b"))


def test_resume_with_another_world_size_keeps_the_global_batch(tmp_path):
    cfg = config(iterations=4)
    spawn("train", {"config": cfg.to_dict(), "run_dir": str(tmp_path / "b"), "crash_at": 3})
    result = train(cfg, tmp_path / "b", resume=True, progress=False)  # now 1 process x 128
    assert result.summary["status"] == "finished" and result.summary["world_size"] == 1


def test_global_batch_must_divide_over_processes(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match=r"batch_size \(128\) is the global batch .* 3 processes"):
        build(config())
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"ghost_batch \(128\) must divide the per-process batch"):
        build(config(ghost_batch=128))
