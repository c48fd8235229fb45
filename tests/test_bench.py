"""Smoke tests of benchmarks/bench_train.py's pieces on tiny sizes (no timing asserts)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from superconv.step import cpu_has_native_bf16

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench(request):
    """The benchmark modules (they live beside each other outside the package)."""
    sys.path.insert(0, str(BENCH_DIR))
    request.addfinalizer(lambda: sys.path.remove(str(BENCH_DIR)))
    import bench_loops
    import bench_train

    return bench_loops, bench_train


def tiny_data(bench_loops, n=32, channels=3, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return bench_loops.BenchData(
        "tiny",
        images,
        labels,
        images[:8],
        labels[:8],
        (0.5,) * channels,
        (0.25,) * channels,
        "test",
    )


def test_naive_dataset_crops_flips_and_normalises_one_image_at_a_time(bench):
    bench_loops, _ = bench
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 2, 5, 7), dtype=torch.uint8)
    mean, std, pad = (0.4, 0.6), (0.2, 0.3), 2
    ds = bench_loops.AugmentedImages(images, torch.arange(6), mean, std, crop_pad=pad)
    m = torch.tensor(mean).view(-1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1)
    flips, shifts = set(), set()
    for _ in range(30):
        for i in range(len(ds)):
            x, label = ds[i]
            assert label == i and x.shape == (2, 5, 7) and x.dtype == torch.float32
            # Oracle: the output must be exactly one of the (2p+1)^2 crops of the
            # zero-padded image, mirrored or not, normalised as (x/255 - mean) / std.
            padded = F.pad(images[i].float(), (pad, pad, pad, pad))
            found = [
                (dy, dx, flip)
                for dy in range(2 * pad + 1)
                for dx in range(2 * pad + 1)
                for flip in (False, True)
                if torch.allclose(
                    x,
                    ((padded[:, dy : dy + 5, dx : dx + 7].flip(-1) if flip else
                      padded[:, dy : dy + 5, dx : dx + 7]) / 255 - m) / s,
                    atol=1e-5,
                )
            ]  # fmt: skip
            assert found, "output is no crop/flip of the padded image"
            shifts.add(found[0][:2])
            flips.add(found[0][2])
    assert flips == {False, True} and len(shifts) > 10  # random, not a fixed crop


def test_naive_loop_runs_across_epochs(bench):
    bench_loops, _ = bench
    data = tiny_data(bench_loops)
    loop = bench_loops.NaiveLoop("resnet8", data, 8, torch.device("cpu"), total_steps=10)
    before = [p.detach().clone() for p in loop.model.parameters()]
    for _ in range(6):  # 4 batches per epoch: crosses an epoch boundary
        loop.step()
    assert len(loop.losses) == 6 and all(torch.isfinite(torch.tensor(loop.losses)))
    weight = loop.model.blocks[0].conv1.weight  # the naive loop keeps NCHW
    assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.model.parameters()))


def test_project_loop_mirrors_train_bookkeeping(bench):
    bench_loops, _ = bench
    data = tiny_data(bench_loops)
    loop = bench_loops.ProjectLoop("resnet8", data, 8, torch.device("cpu"), total_steps=20)
    weight = loop.model.blocks[0].conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    for _ in range(12):
        loop.step()
    assert loop.iteration == 12
    assert int(loop.sums["count"]) == 12 * 8 and int(loop.sums["bad_step"]) == -1
    assert 0 <= int(loop.sums["correct"]) <= 96
    # the policy wrote the 1cycle LR of the last step (11) into the optimizer
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(float(loop.policy["lr"](11)))


def test_failed_compile_falls_back_to_eager_with_one_warning(bench):
    bench_loops, _ = bench

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C compiler here")

    loop = bench_loops.ProjectLoop("lenet", tiny_data(bench_loops, channels=1, side=28), 8,
                                   torch.device("cpu"), total_steps=10)  # fmt: skip
    twin = bench_loops.ProjectLoop("lenet", tiny_data(bench_loops, channels=1, side=28), 8,
                                   torch.device("cpu"), total_steps=10)  # fmt: skip
    loop.forward = torch.compile(loop.model, backend=broken_backend)
    loop.compile_pending = True
    with pytest.warns(
        UserWarning, match="torch.compile failed .*no C compiler here.*running eager"
    ):
        loop.step()
    assert loop.forward is loop.model and "no C compiler here" in loop.compile_error
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning only
        loop.step()
    twin.step()
    twin.step()
    for a, b in zip(loop.model.parameters(), twin.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the failed try left no trace


def test_interleaving_runs_round_robin_blocks(bench):
    bench_loops, _ = bench
    order = []

    class Counter:
        batch_size = 4

        def __init__(self, name):
            self.name, self.n = name, 0

        def step(self):
            self.n += 1
            order.append(self.name)

    loops = {"a": Counter("a"), "b": Counter("b")}
    times = bench_loops.run_interleaved(
        loops, warmup=2, steps=5, block=2, extra={"a": 3}, device=torch.device("cpu")
    )
    assert loops["a"].n == 2 + 5 + 3 and loops["b"].n == 2 + 5
    # warm-ups first, then blocks alternate: a a | b b | a a b b | a a b b | a b | a a | a
    assert "".join(order) == "aabb" + "aabb" + "aabb" + "ab" + "aa" + "a"
    a, b = times["a"].summary(), times["b"].summary()
    assert a["timed_steps"] == b["timed_steps"] == 5
    assert a["total_steps"] == 10 and b["total_steps"] == 7
    assert [blk[1] for blk in times["a"].blocks] == [2, 2, 1, 2, 1]
    assert [blk[3] for blk in times["a"].blocks] == [True, True, True, False, False]


def test_ratio_to_uses_all_blocks_and_per_round_median(bench):
    bench_loops, _ = bench
    base = bench_loops.LoopTimes(
        10, blocks=[(0, 10, 1.0, True), (1, 10, 2.0, True), (2, 10, 1.0, True)]
    )
    fast = bench_loops.LoopTimes(
        10, blocks=[(0, 10, 0.5, True), (1, 10, 0.5, True), (2, 10, 0.5, True)]
    )
    ratio = bench_loops.ratio_to({"base": base, "fast": fast}, "fast", "base")
    assert ratio["overall"] == pytest.approx((30 / 1.5) / (30 / 4.0))  # 2.667
    assert ratio["median_per_round"] == pytest.approx(2.0)  # rounds: 2, 4, 2
    assert fast.summary()["s_per_1000_iterations"] == pytest.approx(50.0)


def test_peak_memory_sees_a_large_allocation(bench):
    bench_loops, _ = bench
    memory = bench_loops.PeakMemory(torch.device("cpu"))
    if "reset" not in memory.kind:
        pytest.skip(f"cannot reset the peak RSS here ({memory.kind})")
    memory.reset()
    before = memory.peak_mib()
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so that it is resident
    assert memory.peak_mib() >= before + 60
    del big


def test_targets_are_met_missed_or_not_measured(bench):
    _, bench_train = bench
    # range test: mean 10.1 s <= the slowest plain timing, 10.2 s
    rt = {"range_test_s": [10.0, 10.2], "plain_s": [9.5, 10.2, 9.9], "ratio_to_plain_mean": 1.02}
    rows = bench_train.check_targets(
        speedup={"project_eager": 1.6, "project_compiled": 1.9},
        e2e_speedup={"project_eager": 1.4, "project_compiled": 1.2},
        overhead_k10=0.031, overhead_k1=0.02, range_test=rt,
    )  # fmt: skip
    assert [r["met"] for r in rows] == [True, False, False, True, True]
    assert rows[0]["value"] == 1.9 and rows[0]["met_by"] == ["project_compiled"]
    assert rows[1]["value"] == 1.4 and rows[1]["met_by"] == []
    rows = bench_train.check_targets(
        speedup=None, e2e_speedup=None, overhead_k10=None, overhead_k1=None,
        range_test={**rt, "range_test_s": [10.2, 10.4]},  # mean 10.3 s > 10.2 s
    )  # fmt: skip
    assert [r["met"] for r in rows] == [None, None, None, None, False]


def test_quick_run_writes_json_with_environment_and_targets(bench, tmp_path):
    _, bench_train = bench
    out = tmp_path / "bench.json"
    path = bench_train.main([
        "--quick", "--models", "lenet", "--naive-models", "lenet", "--epoch-models", "lenet",
        "--epoch-steps", "7", "--steps", "2", "--warmup", "1", "--block", "1", "--focus", "lenet",
        "--sections", "throughput,overhead,range_test,evaluation", "--random-data", "--out", str(out),
    ])  # fmt: skip
    assert path == out
    result = json.loads(out.read_text())
    env = result["environment"]
    for key in ("cpu", "torch", "torch_threads", "commit", "device", "load_average_start"):
        assert key in env
    assert result["data"]["mnist"].startswith("random")
    (row,) = result["throughput"]
    bf16 = {"project_eager_bf16"} if cpu_has_native_bf16() else set()
    assert set(row["loops"]) == {"naive", "project_eager"} | bf16
    assert row["epoch"] == {"measured": True, "steps": 7, "full_epoch": False}
    # LeNet by hand: forward 2 x (conv 20x24x24x25 + conv 50x8x8x20x25 + fc 800x500 + fc 500x10)
    # FLOPs; backward twice that, less the first conv's input gradient (not needed).
    forward = 2 * (20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10)
    assert row["train_flop_per_image"] == 3 * forward - 2 * 20 * 24 * 24 * 25
    for name in ("naive", "project_eager"):
        loop = row["loops"][name]
        assert loop["timed_steps"] == 2 and loop["total_steps"] == 7
        assert loop["end_to_end_s"] >= loop["timed_s"] > 0 and loop["peak_memory_mib"] > 0
    for name in bf16:  # timed, but no epoch: bf16 is not counted for the targets
        assert row["loops"][name]["timed_steps"] == 2 and row["loops"][name]["end_to_end_s"] is None
    assert row["ratio_to_naive"]["project_eager"]["overall"] > 0
    assert result["overhead"]["policy+eq8_k1"]["direct_s_per_step"] > 0
    assert result["range_test"]["completed"] and result["range_test"]["evaluations"] == 3
    assert result["evaluation"][0]["images"] == 2000
    assert result["evaluation"][0]["chunk"] == 256 and result["evaluation"][0]["seconds_whole_batches"] > 0
    # ResNet-20 targets were not run: reported as not measured, never as met
    assert [t["met"] for t in result["targets"]] == [None] * 5


def test_time_to_accuracy_trains_fp32_and_bf16_in_one_run(bench, monkeypatch, tmp_path):
    """The section's machinery on a stand-in (LeNet on the shipped mnist-demo: no CIFAR in
    CI): each precision trains in its own process, and its seconds to the target are read
    from its metrics.csv."""
    _, bench_train = bench
    import bf16_parity

    from superconv.config import TrainConfig

    stand_in = TrainConfig(model="lenet", dataset="mnist-demo", batch_size=32, val_size=1000,
                           flip=False, normalize="unit", iterations=40, eval_every=10,
                           checkpoint_every=20, policy="one_cycle",
                           policy_params={"max_lr": 0.05}).to_dict()  # fmt: skip
    monkeypatch.setattr(bf16_parity, "reference_config", lambda task: dict(stand_in))
    monkeypatch.setattr(bench_train, "TTA_TARGET", 50.0)
    settings = bench_train.settings_from(bench_train.parse_args(["--quick", "--models", "lenet"]))
    settings.quick = False  # keep the stand-in's 40 steps, not --quick's 20
    out = bench_train.Bench(settings).time_to_accuracy()
    precisions = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    assert list(out["runs"]) == precisions and out["iterations"] == 40
    for run in out["runs"].values():
        assert run["status"] == "finished" and run["final_test_acc"] > 50
        assert 0 < run["seconds_to_target"] <= run["training_seconds"]
    text = bench_train.markdown_table({"environment": {"cpu": "x", "torch_threads": 1},
                                       "time_to_accuracy": out})  # fmt: skip
    assert "time to 50% test accuracy, lenet 40 it, fp32: " in text
