#!/usr/bin/env python
"""Training speed of superconv's loop against a naive PyTorch loop, measured in the same run.

Writes one JSON file (default ``results/bench/<device>-<time>.json``) and prints a
Markdown table. It reports, on whatever device is present:

- **throughput**: training images/s of the paper's ResNet-20 and ResNet-56 (batch
  128, and 1000 on a GPU) and Caffe's LeNet on MNIST (batch 64, Caffe's solver),
  for the project's loop (eager and ``torch.compile``) and a pinned naive loop,
  run *interleaved* in blocks of ``--block`` steps so that every loop sees the
  same machine load; compile warm-up separately; an end-to-end figure for one
  full epoch including set-up and warm-up; peak memory.
- **real_loop**: ``superconv.train.train`` itself, timed by an observer, as a
  check that the mirrored loop below runs at the real loop's speed.
- **overhead**: per-step cost of applying the policy and of the eq. 8 observer
  (``LREstimator``, k=1 and k=10).
- **range_test**: one LR range test against the same number of plain training
  steps plus its evaluations (timed before and after it).
- **evaluation**: one pass over the test set.
- **ab**: model-level alternatives, interleaved, against what ships (the model code
  as it was before this benchmark, ``nn.BatchNorm2d``, NCHW, bf16 autocast).
- **profile**: where a ResNet-20 step spends its time (``torch.profiler``).
- **time_to_accuracy**: seconds to 80% test accuracy, ResNet-20 1cycle 5 epochs, fp32
  and bf16 (where bf16 is native) trained at once, one thread each (~20 min on 2 cores).
- **targets**: the issue's CPU targets, each reported met / missed with its numbers.
  The script never asserts.

Usage::

    python benchmarks/bench_train.py                  # the full run (~35 min on 2 CPU cores)
    python benchmarks/bench_train.py --quick          # smoke run, ~1-2 min, no compile
    python benchmarks/bench_train.py --models resnet20 --steps 300 --no-compile
    python benchmarks/bench_train.py --sections throughput,overhead --out /tmp/b.json

Data: the real CIFAR-10 / MNIST when ``SUPERCONV_DATA`` (or the cache folder)
holds them, else random uint8 images of the same shape; the JSON says which.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_loops import (  # noqa: E402
    BenchData,
    LoopTimes,
    NaiveLoop,
    PeakMemory,
    ProjectLoop,
    StepClock,
    bench_data,
    load_average,
    max_lr,
    out_of_place_relu,
    ratio_to,
    run_interleaved,
    synchronize,
    train_flop_per_image,
    two_pass_bn,
)

from superconv import records
from superconv.data import DeviceLoader
from superconv.estimator import LREstimator
from superconv.models import build_model
from superconv.range_test import COMPLETED, range_test
from superconv.step import cpu_has_native_bf16
from superconv.train import CPU_EVAL_CHUNK, TrainConfig, evaluate, resolve_device

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "throughput", "real_loop", "overhead", "range_test", "evaluation", "ab", "profile",
    "time_to_accuracy",
)  # fmt: skip

# model -> (data set, CPU batch sizes, GPU batch sizes)
MODEL_PLANS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]] = {
    "resnet20": ("cifar10", (128,), (128, 1000)),  # section 6: batch 1000 = 8 GPUs x 125
    "resnet56": ("cifar10", (128,), (128, 1000)),
    "lenet": ("mnist", (64,), (64, 1000)),  # Caffe's lenet_solver: batch 64
}


# ============================================================================ settings
@dataclass
class Settings:
    """What to run (from the command line)."""

    device: torch.device
    models: list[str]
    naive_models: list[str]
    epoch_models: list[str]
    focus: str  # the model of the overhead, range_test, ab, profile and real_loop sections
    steps: int
    model_steps: dict[str, int]
    warmup: int
    block: int
    compile: bool
    sections: list[str]
    quick: bool
    random_data: bool
    crop_pad: int
    seed: int
    epoch_steps: int | None
    batch_sizes: list[int] | None
    cpu_bf16: bool = True

    def batches_for(self, model: str) -> tuple[int, ...]:
        if self.batch_sizes:
            return tuple(self.batch_sizes)
        _, cpu, gpu = MODEL_PLANS.get(model, MODEL_PLANS["resnet20"])
        return gpu if self.device.type == "cuda" else cpu

    def steps_for(self, model: str) -> int:
        return self.model_steps.get(model, self.steps)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """As TrainConfig(precision="auto"): bf16 autocast on CUDA, float32 on the CPU."""
        return torch.bfloat16 if self.device.type == "cuda" else None


# ============================================================================ sections
class Bench:
    """Runs the sections; each returns a JSON-able dict (or list of them)."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.device = settings.device
        self.memory = PeakMemory(self.device)
        self.data_sets: dict[str, BenchData] = {}
        self.kept: dict[tuple[str, int, str], ProjectLoop] = {}  # loops later sections reuse
        self.focus, self.focus_batch = settings.focus, settings.batches_for(settings.focus)[0]

    def data(self, model: str) -> BenchData:
        name = MODEL_PLANS.get(model, MODEL_PLANS["resnet20"])[0]
        if name not in self.data_sets:
            self.data_sets[name] = bench_data(
                name, force_random=self.s.random_data, seed=self.s.seed
            )
        return self.data_sets[name]

    def project(self, model: str, batch: int, *, total_steps: int = 10**6, **kw) -> ProjectLoop:
        kw.setdefault("autocast_dtype", self.s.autocast_dtype)
        data, s = self.data(model), self.s
        return ProjectLoop(
            model,
            data,
            batch,
            self.device,
            total_steps=total_steps,
            crop_pad=s.crop_pad,
            seed=s.seed,
            **kw,
        )

    def test_loader(self, model: str) -> DeviceLoader:
        """The test set in batches of 1000, as train() evaluates (TrainConfig.eval_batch_size)."""
        data = self.data(model)
        return DeviceLoader(
            data.test_x, data.test_y, 1000, mean=data.mean, std=data.std, train=False,
            device=self.device, channels_last=True,
        )  # fmt: skip

    def time_it(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        synchronize(self.device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(self.device)
        return out, time.perf_counter() - t0

    # ------------------------------------------------------------------ throughput
    def throughput(self) -> list[dict[str, Any]]:
        """Naive vs project loops (eager, compiled), interleaved, per model and batch size."""
        return [self._throughput(m, b) for m in self.s.models for b in self.s.batches_for(m)]

    def _throughput(self, model: str, batch: int) -> dict[str, Any]:
        s, data = self.s, self.data(model)
        steps = s.steps_for(model)
        per_epoch = len(data.train_y) // batch
        epoch = s.epoch_steps if s.epoch_steps is not None else per_epoch
        # An epoch shorter than warm-up + timed steps (batch 1000 on a GPU) is not timed apart.
        in_epoch = model in s.epoch_models and epoch >= s.warmup + steps
        extra = epoch - s.warmup - steps if in_epoch else 0
        total = s.warmup + steps + extra + 1
        makers: dict[str, Callable[[], Any]] = {}
        if model in s.naive_models:
            makers["naive"] = partial(
                NaiveLoop, model, data, batch, self.device, total_steps=total,
                crop_pad=s.crop_pad, seed=s.seed,
            )  # fmt: skip
        makers["project_eager"] = partial(self.project, model, batch, total_steps=total)
        if s.compile:
            makers["project_compiled"] = partial(
                self.project, model, batch, total_steps=total, compile=True
            )
        if s.cpu_bf16 and self.device.type == "cpu" and cpu_has_native_bf16():
            # precision="bf16": other arithmetic than the naive loop, so reported, not counted
            makers["project_eager_bf16"] = partial(
                self.project, model, batch, total_steps=total, autocast_dtype=torch.bfloat16
            )
        loops, times = {}, {}
        for name, make in makers.items():
            loops[name], setup = self.time_it(make)
            times[name] = LoopTimes(batch, setup_s=setup)
        print(f"[throughput] {model} batch {batch}: {', '.join(loops)}", flush=True)
        extras = {name: 0 if name.endswith("bf16") else extra for name in loops}
        run_interleaved(
            loops, warmup=s.warmup, steps=steps, block=s.block, extra=extras,
            device=self.device, memory=self.memory, times=times,
        )  # fmt: skip
        flop = train_flop_per_image(model, data)
        row: dict[str, Any] = {
            "model": model,
            "dataset": data.name,
            "batch_size": batch,
            "epoch": {"measured": in_epoch, "steps": epoch, "full_epoch": epoch == per_epoch},
            "train_flop_per_image": flop,
            "loops": {name: t.summary() for name, t in times.items()},
        }
        for summary in row["loops"].values():
            summary["gflop_per_s"] = summary["images_per_s"] * flop / 1e9
            if not in_epoch or summary["total_steps"] != epoch:  # not (just) one epoch
                summary["end_to_end_s"] = None
        others = [name for name in loops if name != "naive"]
        if "naive" in loops:
            row["ratio_to_naive"] = {name: ratio_to(times, name, "naive") for name in others}
            if in_epoch:
                naive_e2e = row["loops"]["naive"]["end_to_end_s"]
                row["end_to_end_ratio_to_naive"] = {
                    name: naive_e2e / row["loops"][name]["end_to_end_s"]
                    for name in others
                    if row["loops"][name]["end_to_end_s"]
                }
        if "project_compiled" in loops:
            row["compile_error"] = loops["project_compiled"].compile_error
            row["compiled_over_eager"] = ratio_to(times, "project_compiled", "project_eager")
        for name in others:
            self.kept[(model, batch, name)] = loops[name]
        return row

    # ------------------------------------------------------------------ the real train()
    def real_loop(self) -> dict[str, Any]:
        """superconv.train.train itself for a few iterations, each step timed by an observer."""
        from superconv.train import train

        data, batch = self.data(self.focus), self.focus_batch
        if not data.source.startswith("real"):
            return {"skipped": f"train() reads {data.name} by name; only {data.source} is here"}
        n = 12 if self.s.quick else 60
        first = min(self.s.warmup, n // 2)  # time from the end of step `first` to step n - 1
        config = TrainConfig(
            model=self.focus, dataset=data.name, batch_size=batch, iterations=n, eval_every=n,
            checkpoint_every=n, policy="one_cycle", policy_params={"max_lr": max_lr(self.focus)},
            crop_pad=self.s.crop_pad, device=str(self.device), seed=self.s.seed,
        )  # fmt: skip
        clock = StepClock(self.device)
        print(
            f"[real_loop] superconv.train.train: {self.focus} batch {batch}, {n} steps", flush=True
        )
        with tempfile.TemporaryDirectory() as run_dir:
            result, wall = self.time_it(
                lambda: train(config, run_dir, observers=[clock], progress=False)
            )
        seconds = clock.seconds(first, n - 1)
        return {
            "model": self.focus,
            "batch_size": batch,
            "compile": config.compile,
            "iterations": n,
            "timed_steps": n - 1 - first,
            "images_per_s": (n - 1 - first) * batch / seconds,
            "train_call_s": wall,
            "training_wall_time_s": result.summary["wall_time"],
            "note": "eager train(), timed by an observer (its log_every reads included); "
            "throughput's project_eager ran the mirrored loop at another moment",
        }

    # ------------------------------------------------------------------ policy / observer overhead
    def overhead(self) -> dict[str, Any]:
        """Per-step cost of apply(policy) and of the eq. 8 observer at k=10 and k=1."""
        s, batch = self.s, self.focus_batch
        loop = self.kept.get((self.focus, batch, "project_compiled"))
        loop = loop or self.kept.get((self.focus, batch, "project_eager"))
        if loop is None:
            loop = self.project(self.focus, batch, compile=s.compile)
        name = "project_compiled" if loop.forward is not loop.model else "project_eager"
        loop.iteration = 0  # the 1cycle restarts; the weights carry on
        variants = {
            "fixed_lr": Configured(loop, use_policy=False),
            "policy": Configured(loop, use_policy=True),
            "policy+eq8_k10": Configured(loop, use_policy=True, observers=[LREstimator(k=10)]),
            "policy+eq8_k1": Configured(loop, use_policy=True, observers=[LREstimator(k=1)]),
        }
        rounds, block = (2, 2) if s.quick else (12, 10)
        print(
            f"[overhead] {self.focus} batch {batch} ({name}): {rounds} x {block} steps", flush=True
        )
        times = run_interleaved(
            variants, warmup=1 if s.quick else 3, steps=rounds * block, block=block,
            device=self.device, memory=self.memory,
        )  # fmt: skip
        step_s = times["fixed_lr"].summary()["s_per_1000_iterations"] / 1000
        result: dict[str, Any] = {
            "model": self.focus,
            "batch_size": batch,
            "loop": name,
            "plain_step_s": step_s,
            "method": "ab: interleaved blocks, time per step with the extra over without, "
            "minus 1 (noisy at the 1% level). direct (CPU only, used for the targets): seconds "
            "inside apply() or the observer per step over the plain step time; on the CPU "
            "every op runs synchronously, so that is the extra's whole cost.",
        }
        for vname, variant in variants.items():
            if vname == "fixed_lr":
                continue
            ratio = ratio_to(times, "fixed_lr", vname)  # = time(variant) / time(fixed_lr)
            entry: dict[str, Any] = {
                "ab_overhead": _minus_one(ratio["overall"]),
                "ab_overhead_median_per_round": _minus_one(ratio["median_per_round"]),
            }
            if self.device.type == "cpu":
                per_step = variant.extra_s / variant.steps
                entry.update(direct_s_per_step=per_step, direct_overhead=per_step / step_s)
            result[vname] = entry
        return result

    # ------------------------------------------------------------------ range test
    def range_test(self) -> dict[str, Any]:
        """One LR range test against the same plain steps + evaluations before and after it."""
        n = 6 if self.s.quick else 60
        eval_every = max(1, n // 3)
        loop = self.project(self.focus, self.focus_batch)
        test_loader = self.test_loader(self.focus)
        for _ in range(1 if self.s.quick else 3):
            loop.step()

        def evaluations_and_steps() -> None:
            for i in range(n):
                loop.step()
                if (i + 1) % eval_every == 0:
                    evaluate(loop.model, itertools.islice(test_loader, 1), device=self.device,
                             autocast_dtype=loop.autocast_dtype)  # fmt: skip

        def one_range_test():
            return range_test(
                loop.model, loop.optimizer, F.cross_entropy, loop.loader, test_loader,
                start_lr=1e-4, end_lr=0.5, num_steps=n, eval_every=eval_every, eval_batches=1,
                diverge_factor=math.inf, autocast_dtype=loop.autocast_dtype, device=self.device,
                progress=False,
            )  # fmt: skip

        print(f"[range_test] {self.focus}: {n} steps, an evaluation every {eval_every}", flush=True)
        # plain, test, plain, test, plain: the plain timings bracket the noise.
        plain, tests, curves = [], [], []
        for _ in range(2):
            plain.append(self.time_it(evaluations_and_steps)[1])
            curve, seconds = self.time_it(one_range_test)
            curves.append(curve)
            tests.append(seconds)
        plain.append(self.time_it(evaluations_and_steps)[1])
        mean_test = sum(tests) / len(tests)
        return {
            "model": self.focus,
            "batch_size": self.focus_batch,
            "steps": n,
            "evaluations": n // eval_every,
            "eval_images_each": 1000,
            "completed": all(c.stop_reason == COMPLETED and len(c.losses) == n for c in curves),
            "range_test_s": tests,
            "plain_s": plain,
            "ratio_to_plain_mean": mean_test / (sum(plain) / len(plain)),
            "rule": "met when the mean range test time <= the slowest of the plain timings "
            "(steps + evaluations) around them, i.e. no dearer within the measured noise",
        }

    # ------------------------------------------------------------------ evaluation pass
    def evaluation(self) -> list[dict[str, Any]]:
        """One pass over the test set per model (eager, as train() evaluates), timed
        interleaved against whole eval batches in one forward each (``chunk=0``): on the
        CPU, train.evaluate splits a batch into train.CPU_EVAL_CHUNK-image forwards."""
        out = []
        for model in self.s.models:
            data, loader = self.data(model), self.test_loader(model)
            loop = next((v for key, v in self.kept.items() if key[0] == model), None)
            loop = loop or self.project(model, self.s.batches_for(model)[0])
            batches = 2 if self.s.quick else len(loader)

            def one_pass(k: int, chunk=None, loop=loop, loader=loader) -> None:
                evaluate(loop.model, itertools.islice(loader, k), device=self.device,
                         autocast_dtype=loop.autocast_dtype, chunk=chunk)  # fmt: skip

            one_pass(1)  # warm-up
            self.memory.reset()
            shipped, whole = [], []
            for _ in range(1 if self.s.quick else 3):  # interleaved: the same load for both
                shipped.append(self.time_it(lambda: one_pass(batches))[1])  # noqa: B023
                whole.append(self.time_it(lambda: one_pass(batches, 0))[1])  # noqa: B023
            seconds = min(shipped)
            images = min(len(data.test_y), batches * loader.batch_size)
            print(f"[evaluation] {model}: {images} images in {seconds:.2f} s "
                  f"(whole batches: {min(whole):.2f} s)", flush=True)  # fmt: skip
            out.append({
                "model": model, "dataset": data.name, "images": images,
                "eval_batch_size": loader.batch_size, "seconds": seconds,
                "images_per_s": images / seconds, "peak_memory_mib": round(self.memory.peak_mib(), 1),
                "chunk": CPU_EVAL_CHUNK if self.device.type == "cpu" else None,
                "seconds_whole_batches": min(whole), "time_vs_whole_batches": seconds / min(whole),
            })  # fmt: skip
            if model == self.focus and not self.s.quick:
                out[-1]["bn_folded"] = self._folded_eval(model, loader, batches)
        return out

    def _folded_eval(self, model: str, loader: DeviceLoader, batches: int) -> dict[str, Any]:
        """Evaluation with each BN folded into its conv (torch.fx's fuse; it folds
        nn.BatchNorm2d only, so both sides use bn_mode "torch"), interleaved with unfolded."""
        from torch.fx.experimental.optimization import fuse

        fmt = torch.channels_last
        plain = build_model(model, in_channels=self.data(model).train_x.shape[1], bn_mode="torch")
        plain = plain.to(self.device, memory_format=fmt).eval()
        folded = fuse(plain).to(self.device, memory_format=fmt)
        times: dict[str, list[float]] = {"unfolded": [], "folded": []}
        for _ in range(3):
            for name, net in (("unfolded", plain), ("folded", folded)):
                run = partial(evaluate, net, itertools.islice(loader, batches), device=self.device)
                times[name].append(self.time_it(run)[1])
        best = {k: min(v) for k, v in times.items()}
        print(f"[evaluation] {model} BN folded: {best['folded']:.2f} s vs {best['unfolded']:.2f} s",
              flush=True)  # fmt: skip
        return {"seconds": best, "time_folded_vs_unfolded": best["folded"] / best["unfolded"]}

    # ------------------------------------------------------------------ A/B of model-level choices
    def ab(self) -> dict[str, Any]:
        """Model-level alternatives, eager, interleaved; ratios are to the shipped setting."""
        s = self.s
        variants: dict[str, dict[str, Any]] = {
            "shipped: Caffe BN one pass, in-place ReLU, channels_last": {},
            "before: Caffe BN two passes (var_mean)": {"patch": two_pass_bn},
            "before: ReLU and residual sum out of place": {"patch": out_of_place_relu},
            "before: both": {"patch": lambda m: (two_pass_bn(m), out_of_place_relu(m))},
            "nn.BatchNorm2d (bn_mode torch)": {"bn_mode": "torch"},
            "NCHW": {"channels_last": False},
        }
        if self.device.type == "cpu":
            variants["bf16 autocast"] = {"autocast_dtype": torch.bfloat16}
            # torch.optim.SGD runs a for-loop over the parameters on the CPU by default
            variants["SGD foreach"] = {"sgd": {"foreach": True}}
            variants["SGD fused"] = {"sgd": {"fused": True}}
        else:
            variants["float32 (no autocast)"] = {"autocast_dtype": None}
        loops = {
            name: self.project(self.focus, self.focus_batch, **kw) for name, kw in variants.items()
        }
        rounds, block = (1, 2) if s.quick else (8, 5)
        print(f"[ab] {self.focus} batch {self.focus_batch}: {len(loops)} variants", flush=True)
        times = run_interleaved(
            loops, warmup=1 if s.quick else 3, steps=rounds * block, block=block,
            device=self.device, memory=self.memory,
        )  # fmt: skip
        shipped = next(iter(loops))
        return {
            "model": self.focus,
            "batch_size": self.focus_batch,
            "loop": "project_eager",
            "variants": {
                name: {
                    "images_per_s": t.summary()["images_per_s"],
                    **ratio_to(times, name, shipped),
                }
                for name, t in times.items()
            },
        }

    # ------------------------------------------------------------------ profile
    def profile(self) -> dict[str, Any]:
        """Where an eager step's time goes: the top ops by self time (torch.profiler)."""
        from torch.profiler import ProfilerActivity, profile

        steps = 2 if self.s.quick else 5
        loop = self.project(self.focus, self.focus_batch)
        for _ in range(2):
            loop.step()
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        print(f"[profile] {self.focus} batch {self.focus_batch}: {steps} eager steps", flush=True)
        with profile(activities=activities) as prof:
            for _ in range(steps):
                loop.step()
            synchronize(self.device)
        attr = "self_device_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        events = sorted(
            (e for e in prof.key_averages() if getattr(e, attr, 0) > 0),
            key=lambda e: getattr(e, attr),
            reverse=True,
        )
        total = sum(getattr(e, attr) for e in events)
        return {
            "model": self.focus,
            "batch_size": self.focus_batch,
            "loop": "project_eager",
            "sorted_by": attr,
            "ms_per_step": total / 1000 / steps,
            "top_ops": [
                {
                    "op": e.key,
                    "ms_per_step": round(getattr(e, attr) / 1000 / steps, 3),
                    "share": round(getattr(e, attr) / total, 4),
                    "calls_per_step": e.count / steps,
                }
                for e in events[:15]
            ],
        }


    # ------------------------------------------------------------------ time to accuracy
    def time_to_accuracy(self) -> dict[str, Any]:
        """Seconds to TTA_TARGET % test accuracy on ResNet-20, 1cycle, 5 epochs (the config
        of the fair comparison's swept 1cycle row, seed 0), fp32 and bf16 in this one run.

        On the CPU both train at once, one thread each, so they see the same machine (two
        cores are needed for that; with one they run in turn); on a GPU in turn. The
        seconds are the loop's clock (``metrics.csv``'s wall_time: training steps, not
        evaluations) at the first evaluation at or over the target. ``--quick``: 20 steps,
        a smoke run of the machinery (the target is then not reached)."""
        import multiprocessing

        import bf16_parity

        fields = bf16_parity.reference_config("resnet20-5ep")
        fields.update(device=str(self.device), threads=1 if self.device.type == "cpu" else None)
        if self.s.quick:
            fields.update(iterations=20, eval_every=10, checkpoint_every=20)
        native = self.device.type == "cuda" or cpu_has_native_bf16()
        precisions = ["fp32", "bf16"] if native else ["fp32"]
        together = self.device.type == "cpu" and (os.cpu_count() or 1) >= len(precisions)
        print(f"[time_to_accuracy] {fields['model']} {fields['iterations']} it, {', '.join(precisions)}"
              f" ({'at once' if together else 'in turn'})", flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="superconv-tta-") as tmp:
            ctx = multiprocessing.get_context("spawn")
            jobs = [
                ctx.Process(target=_train_one, args=({**fields, "precision": p}, f"{tmp}/{p}"))
                for p in precisions
            ]
            for job in jobs:
                job.start()
                if not together:
                    job.join()
            for job in jobs:
                job.join()
            runs = {p: _tta_row(Path(tmp, p)) for p in precisions}
        return {
            "model": fields["model"], "batch_size": fields["batch_size"], "target_test_acc": TTA_TARGET,
            "iterations": fields["iterations"], "source": bf16_parity.TASKS["resnet20-5ep"],
            "together": together, "native_bf16": native, "runs": runs,
        }  # fmt: skip


TTA_TARGET = 80.0  # % test accuracy, the time-to-accuracy mark for ResNet-20


def _train_one(fields: dict[str, Any], folder: str) -> None:
    """One training run in a child process (time_to_accuracy)."""
    from superconv.train import train

    train(TrainConfig.from_dict(fields), folder, progress=False)


def _tta_row(folder: Path) -> dict[str, Any]:
    """What a time_to_accuracy run left: its seconds to the target, final accuracy, clock."""
    import json

    import bf16_parity

    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        return {"error": f"the run in {folder} did not end (no summary.json)"}
    summary = json.loads(summary_path.read_text())
    return {
        "status": summary.get("status"),
        "final_test_acc": summary.get("final_test_acc"),
        "training_seconds": summary.get("wall_time"),
        "seconds_to_target": bf16_parity._seconds_to(folder / "metrics.csv", TTA_TARGET),
    }


def _minus_one(x: float | None) -> float | None:
    return None if x is None else x - 1


class Configured:
    """One overhead variant of a shared loop: its policy switch and observers, and the
    seconds they took (``extra_s``: apply() without observers, else the observers)."""

    def __init__(self, loop: ProjectLoop, *, use_policy: bool, observers: Sequence = ()):
        self.loop, self.use_policy, self.observers = loop, use_policy, list(observers)
        self.batch_size = loop.batch_size
        self.steps, self.extra_s = 0, 0.0

    def step(self) -> None:
        loop = self.loop
        loop.use_policy, loop.observers = self.use_policy, self.observers
        loop.time_parts = loop.device.type == "cpu"
        loop.policy_s = loop.observer_s = 0.0
        loop.step()
        self.extra_s += loop.observer_s if self.observers else loop.policy_s
        self.steps += 1


# ============================================================================ targets
def check_targets(
    *,
    speedup: Mapping[str, float] | None,
    e2e_speedup: Mapping[str, float] | None,
    overhead_k10: float | None,
    overhead_k1: float | None,
    range_test: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """The issue's targets (set for a 2-core CPU): each met (True) / missed (False) /
    not measured (None), with its value.

    ``speedup`` and ``e2e_speedup`` map each project loop (eager, compiled) to its
    ratio over the naive loop; the best one counts and ``met_by`` names every loop
    that meets the target.
    """
    rt = range_test or {}
    tests, plain = rt.get("range_test_s") or [], rt.get("plain_s") or []
    rt_ok = bool(tests and plain) and sum(tests) / len(tests) <= max(plain)
    rows = [
        ("steady images/s of the project's loop / the naive loop (ResNet-20, batch 128)",
         ">= 1.8", speedup, lambda v: v >= 1.8),
        ("one epoch end to end incl. set-up and warm-up, naive time / project time",
         ">= 1.5", e2e_speedup, lambda v: v >= 1.5),
        ("eq. 8 observer k=10, extra time per step", "<= 0.03", overhead_k10, lambda v: v <= 0.03),
        ("eq. 8 observer k=1, extra time per step", "<= 0.10", overhead_k1, lambda v: v <= 0.10),
        ("LR range test time / its plain steps + evaluations", "<= 1 (see range_test.rule)",
         rt.get("ratio_to_plain_mean"), lambda v: rt_ok),
    ]  # fmt: skip
    out = []
    for name, rule, value, ok in rows:
        entry: dict[str, Any] = {"target": name, "rule": rule}
        if isinstance(value, Mapping):
            entry["by_loop"] = dict(value)
            entry["met_by"] = [loop for loop, v in value.items() if ok(v)]
            value = max(value.values(), default=None)
        entry["value"] = value
        entry["met"] = None if value is None else bool(ok(value))
        out.append(entry)
    return out


def targets_from(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The numbers :func:`check_targets` needs, from a result dict (ResNet-20, batch 128).

    Observer overheads are the direct ones on a CPU, the interleaved A/B ones elsewhere.
    """
    rows = [r for r in result.get("throughput", []) if isinstance(r, Mapping)]
    row = next((r for r in rows if r["model"] == "resnet20" and r["batch_size"] == 128), {})
    # Counted: loops with the naive loop's float32 arithmetic (bf16 is reported aside).
    ratios = row.get("ratio_to_naive", {})
    speedup = {n: v["overall"] for n, v in ratios.items() if v["overall"] and "bf16" not in n}
    e2e = row.get("end_to_end_ratio_to_naive") if row.get("epoch", {}).get("full_epoch") else None
    overhead = result.get("overhead") or {}
    if overhead.get("model") != "resnet20" or overhead.get("batch_size") != 128:
        overhead = {}

    def extra(key: str) -> float | None:
        entry = overhead.get(key) or {}
        return entry.get("direct_overhead", entry.get("ab_overhead"))

    rt = result.get("range_test") or {}
    targets = check_targets(
        speedup=speedup or None,
        e2e_speedup=e2e or None,
        overhead_k10=extra("policy+eq8_k10"),
        overhead_k1=extra("policy+eq8_k1"),
        range_test=rt if rt.get("model") == "resnet20" else None,
    )
    bf16 = {n: v["overall"] for n, v in ratios.items() if v["overall"] and "bf16" in n}
    if bf16:
        targets[0]["not_counted"] = {
            "ratios": bf16,
            "why": "bf16 autocast (precision='bf16') does other arithmetic than the float32 "
            "naive loop, so the float32 target does not count it; its accuracy is measured "
            "by benchmarks/bf16_parity.py (results/bf16-parity/parity.md) and its time to "
            "accuracy by this script's time_to_accuracy section",
        }
    return targets


# ============================================================================ reporting
def markdown_table(result: Mapping[str, Any]) -> str:
    """The throughput rows and the targets as Markdown (for docs/speed.md)."""
    env = result["environment"]
    device = env.get("gpu") or f"{env['cpu']}, {env['torch_threads']} threads"
    lines = [
        "| device | model | batch | loop | images/s | x naive | s / 1,000 it | GFLOP/s "
        "| first step s | epoch s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.get("throughput", []):
        if "loops" not in row:  # a failed section
            continue
        for name, t in row["loops"].items():
            ratio = row.get("ratio_to_naive", {}).get(name, {}).get("overall")
            ratio_text = "" if ratio is None else f"{ratio:.2f}"
            e2e = t["end_to_end_s"] if row["epoch"]["measured"] else None
            epoch_text = "" if e2e is None else f"{e2e:.0f}"
            lines.append(
                f"| {device} | {row['model']} | {row['batch_size']} | {name} | "
                f"{t['images_per_s']:.0f} | {ratio_text} | {t['s_per_1000_iterations']:.0f} | "
                f"{t['gflop_per_s']:.0f} | {t['first_step_s']:.1f} | {epoch_text} |"
            )
    lines.append("")
    for t in result.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        by = f" (met by {', '.join(t['met_by'])})" if t.get("met_by") else ""
        lines.append(f"- {t['target']} ({t['rule']}): {value} -> {verdict}{by}")
    tta = result.get("time_to_accuracy") or {}
    for precision, run in (tta.get("runs") or {}).items():
        secs = run.get("seconds_to_target")
        reached = "not reached" if secs is None else f"{secs:.0f} s"
        lines.append(
            f"- time to {tta['target_test_acc']:g}% test accuracy, {tta['model']} "
            f"{tta['iterations']:,} it, {precision}: {reached} (final "
            f"{run.get('final_test_acc')}%, training {run.get('training_seconds') or 0:.0f} s)"
        )
    return "\n".join(lines)


# ============================================================================ command line
def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _model_steps(text: str) -> dict[str, int]:
    pairs = [item.partition("=") for item in _csv(text)]
    return {name: int(value) for name, _, value in pairs}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--quick", action="store_true", help="smoke run: few steps, no compile, resnet20 + lenet")
    add(
        "--models",
        type=_csv,
        help="models to time (default resnet20,resnet56,lenet; quick: resnet20,lenet)",
    )
    add(
        "--naive-models",
        type=_csv,
        help="models that also get the naive loop (default: CPU resnet20,lenet; GPU all)",
    )
    add(
        "--epoch-models",
        type=_csv,
        help="models also timed over one epoch end to end (default resnet20; quick: none)",
    )
    add("--epoch-steps", type=int, help="steps of that 'epoch' (default: a full epoch)")
    add(
        "--focus",
        default="resnet20",
        help="model of the overhead/range_test/ab/profile/real_loop sections",
    )
    add("--steps", type=int, help="timed steps per loop after warm-up (default 200; quick 6)")
    add(
        "--model-steps",
        type=_model_steps,
        help="per-model steps, e.g. resnet56=60 (default on CPU: resnet56=60)",
    )
    add("--warmup", type=int, help="warm-up steps per loop (default 20; quick 2)")
    add("--block", type=int, help="steps per interleaved block (default 20; quick 3)")
    add(
        "--batch",
        type=lambda t: [int(x) for x in _csv(t)],
        help="batch sizes (default 128, +1000 on a GPU; lenet 64)",
    )
    add(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile (default on; quick off)",
    )
    add("--sections", type=_csv, default=list(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    add(
        "--cpu-bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a CPU with native bf16, also time the project's loop with bf16 autocast (default on)",
    )
    add("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add("--threads", type=int, help="torch.set_num_threads for every loop (default: torch's)")
    add(
        "--random-data", action="store_true", help="random uint8 images even where the real data is"
    )
    add("--crop-pad", type=int, default=4, help="pad-and-crop margin of both loops (default 4)")
    add("--seed", type=int, default=0)
    add(
        "--warm-compile-cache",
        action="store_true",
        help="reuse inductor's cache (default: a fresh one: a first run's compile time)",
    )
    add(
        "--out",
        type=Path,
        help="JSON file or folder (default results/bench/; quick: a temp folder)",
    )
    args = p.parse_args(argv)
    unknown = [x for x in args.sections if x not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    device, quick = resolve_device(args.device), args.quick
    models = args.models or (["resnet20", "lenet"] if quick else ["resnet20", "resnet56", "lenet"])
    naive = args.naive_models
    if naive is None:
        naive = list(models) if device.type == "cuda" else ["resnet20", "lenet"]
    model_steps = args.model_steps
    if model_steps is None:
        model_steps = {"resnet56": 60} if device.type == "cpu" and not quick else {}
    epoch_models = args.epoch_models
    if epoch_models is None:
        epoch_models = [] if quick else ["resnet20"]
    return Settings(
        device=device,
        models=models,
        naive_models=naive,
        epoch_models=epoch_models,
        focus=args.focus,
        steps=args.steps or (6 if quick else 200),
        model_steps=model_steps,
        warmup=args.warmup if args.warmup is not None else (2 if quick else 20),
        block=args.block or (3 if quick else 20),
        compile=args.compile if args.compile is not None else not quick,
        sections=args.sections,
        quick=quick,
        random_data=args.random_data,
        crop_pad=args.crop_pad,
        seed=args.seed,
        epoch_steps=args.epoch_steps,
        batch_sizes=args.batch,
        cpu_bf16=args.cpu_bf16,
    )


def output_path(out: Path | None, quick: bool, device: torch.device) -> Path:
    """``out`` if it names a .json file, else a time-stamped file in the folder ``out``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    if device.type == "cuda":
        kind = torch.cuda.get_device_name(device).replace(" ", "-")
    else:
        kind = f"cpu{os.cpu_count()}"
    if out is None:
        out = (
            Path(tempfile.gettempdir()) / "superconv-bench" if quick else ROOT / "results" / "bench"
        )
    if out.suffix == ".json":
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    return out / f"train-{kind}-{stamp}{'-quick' if quick else ''}.json"


def run(settings: Settings) -> dict[str, Any]:
    """Run the chosen sections; return the result dict, targets included."""
    bench = Bench(settings)
    result: dict[str, Any] = {
        "schema": 1,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": {
            **records.environment(str(settings.device), settings.seed),
            "load_average_start": load_average(),
            "memory_measure": bench.memory.kind,
        },
        "settings": {
            key: value
            if isinstance(value, (int, float, str, list, dict, type(None)))
            else str(value)
            for key, value in vars(settings).items()
        },
    }
    result["settings"]["autocast"] = str(settings.autocast_dtype)
    t0 = time.perf_counter()
    for section in SECTIONS:
        if section in settings.sections:
            try:
                result[section] = getattr(bench, section)()
            except Exception as exc:  # noqa: BLE001 - report it, keep the other sections' numbers
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                print(f"[{section}] FAILED: {detail}", file=sys.stderr, flush=True)
                result[section] = {"error": detail}
    result["data"] = {name: d.source for name, d in bench.data_sets.items()}
    result["environment"]["load_average_end"] = load_average()
    result["environment"]["bench_wall_s"] = time.perf_counter() - t0
    result["targets"] = targets_from(result)
    return result


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark, write the JSON, print the table; return the JSON's path."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from(args)
    with contextlib.ExitStack() as stack:
        if settings.compile and not args.warm_compile_cache:
            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="superconv-inductor-"))
            stack.enter_context(_environ("TORCHINDUCTOR_CACHE_DIR", cache))
        result = run(settings)
    path = records.atomic_write_json(output_path(args.out, settings.quick, settings.device), result)
    print(markdown_table(result))
    print(f"\nwrote {path}")
    return path


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


if __name__ == "__main__":
    main(sys.argv[1:])
