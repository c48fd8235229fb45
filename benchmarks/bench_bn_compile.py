"""Why ``torch.compile`` is slower than eager for ResNet-20 on some CPUs: batch norm.

``bench_train.py`` found the compiled training step slower than the eager one on a
2-core AMD EPYC (0.92x). This script isolates the suspect: one batch-norm + ReLU
layer, forward and backward, at each of the paper ResNet-20's three stage shapes
(batch 128, channels_last), eager against ``torch.compile``. Inductor replaces the
oneDNN batch-norm kernels with its own generated reductions; where those are slower,
compiling the whole model cannot win back the difference from the few fusions it
gains elsewhere (the convolutions stay in oneDNN either way).

Both BN implementations are timed: the project's ``CaffeBatchNorm2d`` (the paper's
debiased running statistics) and plain ``nn.BatchNorm2d``. Eager and compiled run
in interleaved blocks, so both see the same load on a shared machine.

    python benchmarks/bench_bn_compile.py                  # writes results/bench/bn-compile-*.json
    python benchmarks/bench_bn_compile.py --threads 1 --steps 40 --out /tmp/bn.json

It writes JSON and prints a table; it never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
from torch import nn

from superconv import records
from superconv.models.bn import CaffeBatchNorm2d

SHAPES = ((16, 32), (32, 16), (64, 8))  # (channels, side) of ResNet-20's three stages


def _layer(kind: str, channels: int) -> nn.Module:
    bn = CaffeBatchNorm2d(channels, 0.95) if kind == "caffe" else nn.BatchNorm2d(channels)
    return nn.Sequential(bn, nn.ReLU(inplace=True))


def _step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> None:
    x.grad = None
    fn(x).backward(grad)


def time_pair(kind: str, channels: int, side: int, steps: int, block: int) -> dict[str, Any]:
    """Seconds per forward + backward, eager vs compiled, in interleaved blocks."""
    torch.manual_seed(0)
    layer = _layer(kind, channels).train()
    x = torch.randn(128, channels, side, side).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad = torch.randn_like(x)
    compiled = torch.compile(layer)
    t0 = time.perf_counter()
    _step(compiled, x, grad)
    compile_s = time.perf_counter() - t0
    fns = {"eager": layer, "compiled": compiled}
    for fn in fns.values():
        for _ in range(3):
            _step(fn, x, grad)
    blocks: dict[str, list[float]] = {name: [] for name in fns}
    done = 0
    while done < steps:
        n = min(block, steps - done)
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                _step(fn, x, grad)
            blocks[name].append((time.perf_counter() - t0) / n)
        done += n
    eager, comp = (statistics.median(blocks[k]) for k in ("eager", "compiled"))
    return {
        "bn": kind,
        "shape": [128, channels, side, side],
        "eager_ms": 1e3 * eager,
        "compiled_ms": 1e3 * comp,
        "compiled_over_eager_time": comp / eager,
        "first_compiled_call_s": compile_s,
        "block_s_per_step": blocks,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--steps", type=int, default=60, help="timed steps per variant (default 60)")
    p.add_argument("--block", type=int, default=10, help="steps per interleaved block (10)")
    p.add_argument(
        "--out", type=Path, default=None, help="a .json file or a folder (results/bench)"
    )
    args = p.parse_args(argv)
    for name in ("steps", "block", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1, got {value}")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    load_start = os.getloadavg()[0]  # a shared machine: say how busy it was
    # Cold compile in a throw-away cache, not the user's; the variable is restored after.
    with (
        tempfile.TemporaryDirectory() as cache,
        patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}),
    ):
        for kind in ("caffe", "torch"):
            for channels, side in SHAPES:
                rows.append(time_pair(kind, channels, side, args.steps, args.block))
                r = rows[-1]
                print(
                    f"{kind:5s} BN+ReLU {r['shape']}: eager {r['eager_ms']:.1f} ms, compiled "
                    f"{r['compiled_ms']:.1f} ms ({r['compiled_over_eager_time']:.2f}x the time)",
                    flush=True,
                )
    result = {
        "schema": "superconv-bench-bn-compile/1",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": {
            **records.environment("cpu"),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
        },
        "settings": {"steps": args.steps, "block": args.block, "threads": torch.get_num_threads()},
        "what": "one BN + ReLU layer, forward + backward, batch 128, channels_last, float32",
        "rows": rows,
    }
    out = args.out or Path("results/bench")
    if out.suffix != ".json":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = out / f"bn-compile-cpu{torch.get_num_threads()}-{stamp}.json"
    records.atomic_write_json(out, result)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
