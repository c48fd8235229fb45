#!/usr/bin/env python
"""bf16 autocast against fp32 on the CPU: final test accuracy over seeds, and wall time
per epoch, both measured in one run (issue 27, item 1).

Two tasks, each the committed fp32 row it is checked against:

- ``resnet20-5ep``: ResNet-20 on CIFAR-10, batch 128, 5 epochs, the fair comparison's
  swept 1cycle (``results/fair-comparison/reduced/onecycle_swept-5ep``);
- ``lenet-12ep``: Caffe's LeNet on MNIST, batch 64, 12 epochs, 1cycle
  (``results/mnist-lenet/reduced/onecycle-12ep``).

Each task trains the committed row's exact ``config.json`` twice per seed, once with
``precision="fp32"`` and once with ``precision="bf16"`` (autocast; weights, gradients and
optimizer state stay float32), *interleaved* (fp32 seed 0, bf16 seed 0, fp32 seed 1, ...)
so both see the same machine load. The fp32 runs are rerun here, not read from the
committed row, because the speed-up must come from one run on one machine; the
committed row is shown beside them as a check that fp32 reproduces.

Run folders go to ``results/bf16-parity/<task>/<precision>/seed<k>`` (resumable: a
finished run is skipped, a killed one resumes from its checkpoint), then
``results/bf16-parity/parity.json`` and ``parity.md``. Accuracy is compared with the
report's win / tie / loss band (two standard errors of the difference).

Usage::

    python benchmarks/bf16_parity.py --threads 1 --no-progress   # ~1.5 h on one core
    python benchmarks/bf16_parity.py --report-only                # tables from the runs
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from superconv.records import atomic_write_json
from superconv.step import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "resnet20-5ep": "results/fair-comparison/reduced/onecycle_swept-5ep",
    "lenet-12ep": "results/mnist-lenet/reduced/onecycle-12ep",
}
PRECISIONS = ("fp32", "bf16")
TARGET_ACC = {"resnet20-5ep": 80.0, "lenet-12ep": 99.0}  # time to accuracy (issue 27 item 3)


def reference_config(task: str) -> dict[str, Any]:
    """The committed row's config (seed 0), as ``TrainConfig.from_dict`` takes it."""
    path = ROOT / TASKS[task] / "seed0" / "config.json"
    if not path.is_file():
        sys.exit(f"error: {path} is missing: this benchmark checks bf16 against that row.")
    config = json.loads(path.read_text())
    config.pop("policy_built", None)  # derived; written by the run, not a TrainConfig field
    return config


def run_one(task: str, precision: str, seed: int, out: Path, args) -> None:
    from superconv.config import TrainConfig
    from superconv.errors import DivergenceError
    from superconv.train import train

    run_dir = out / task / precision / f"seed{seed}"
    summary = run_dir / "summary.json"
    if summary.is_file():
        print(f"{task} {precision} seed {seed}: finished earlier, skipped")
        return
    fields = reference_config(task)
    fields.update(precision=precision, seed=seed, threads=args.threads, device="cpu")
    if args.data_dir:
        fields["data_dir"] = args.data_dir
    if args.iterations:  # a smoke run (tests): the same config, cut short
        fields.update(iterations=args.iterations, eval_every=args.iterations,
                      checkpoint_every=args.iterations)  # fmt: skip
    config = TrainConfig.from_dict(fields)
    resume = (run_dir / "checkpoint.pt").is_file()
    print(f"{task} {precision} seed {seed}: {'resuming' if resume else 'starting'}", flush=True)
    try:
        result = train(config, run_dir, resume=resume, progress=args.progress)
    except DivergenceError as exc:
        print(f"{task} {precision} seed {seed}: DIVERGED at iteration {exc.step}")
        return
    print(f"{task} {precision} seed {seed}: test acc {result.summary.get('final_test_acc')}")


def _runs(folder: Path, target: float) -> list[dict[str, Any]]:
    rows = []
    for summary in sorted(folder.glob("seed*/summary.json")):
        s = json.loads(summary.read_text())
        c = json.loads((summary.parent / "config.json").read_text())
        steps_per_epoch = s["train_images"] / c["batch_size"]
        epochs = c["iterations"] / steps_per_epoch
        # the loop's own clock: wall_time counts training steps, not evaluations; its
        # seconds_per_step (after the warm-up) counts everything between log steps
        step = s.get("seconds_per_step")
        rows.append(
            {
                "seed": s["seed"],
                "status": s["status"],
                "final_test_acc": s.get("final_test_acc"),
                "wall_time_s": s.get("wall_time"),
                "seconds_per_epoch": s["wall_time"] / epochs if s.get("wall_time") else None,
                "with_eval_seconds_per_epoch": step * steps_per_epoch if step else None,
                "iterations": c["iterations"],
                "seconds_to_target": _seconds_to(summary.parent / "metrics.csv", target),
                "seconds_per_step": s.get("seconds_per_step"),
            }
        )
    return rows


def _seconds_to(metrics: Path, target: float) -> float | None:
    """Training seconds (metrics.csv's wall_time: evaluations not counted) at the first
    evaluation with test accuracy >= ``target``; None: never reached."""
    from superconv.records import read_csv

    for row in read_csv(metrics):
        if row.get("test_acc") not in (None, "") and float(row["test_acc"]) >= target:
            return float(row["wall_time"])
    return None


def _ratio(a: float, b: float) -> float | None:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else None


def _secs(x: float) -> str:
    return f"{x:.0f}" if math.isfinite(x) else "—"


def summarise(out: Path) -> dict[str, Any]:
    from superconv.records import environment
    from superconv.report import mean_std, verdict

    tasks = {}
    for task, ref in TASKS.items():
        runs = {p: _runs(out / task / p, TARGET_ACC[task]) for p in PRECISIONS}
        runs["fp32_committed"] = _runs(ROOT / ref, TARGET_ACC[task])
        acc = {k: [r["final_test_acc"] for r in v] for k, v in runs.items()}
        per_epoch, wall = (
            {k: mean_std([r[key] for r in runs[k]])[0] for k in PRECISIONS}
            for key in ("seconds_per_epoch", "with_eval_seconds_per_epoch")
        )
        tasks[task] = {
            "reference_row": ref,
            "runs": runs,
            "test_acc": {k: dict(zip(("mean", "std", "n"), mean_std(v))) for k, v in acc.items()},
            "bf16_vs_fp32": verdict(acc["bf16"], acc["fp32"]),
            "fp32_vs_committed": verdict(acc["fp32"], acc["fp32_committed"]),
            "seconds_per_epoch": per_epoch,
            "with_eval_seconds_per_epoch": wall,
            "target_test_acc": TARGET_ACC[task],
            "seconds_to_target": {p: [r["seconds_to_target"] for r in runs[p]] for p in PRECISIONS},
            "speedup_bf16": _ratio(per_epoch["fp32"], per_epoch["bf16"]),
        }
    env = environment(device="cpu")
    return {
        "what": "bf16 autocast vs fp32 on the CPU (issue 27 item 1)",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "environment": env,
        "tasks": tasks,
    }


def markdown(result: dict[str, Any]) -> str:
    from superconv.report import format_mean_std

    tasks = result["tasks"].values()
    planned = {r["iterations"] for t in tasks for r in t["runs"]["fp32_committed"]}
    short = sorted({r["iterations"] for t in tasks for p in PRECISIONS for r in t["runs"][p]}
                   - planned)  # fmt: skip
    lines = [
        "# bf16 autocast vs fp32 on the CPU",
        "",
        *([f"**Runs cut short ({short} iterations): a smoke run, not a parity measurement.**",
           ""] if short else []),  # fmt: skip
        f"Made by `python benchmarks/{result['command']}` on {result['environment']['cpu']} "
        f"(native bf16: {'yes' if result['cpu_native_bf16'] else 'no'}), torch "
        f"{result['environment']['torch']}, commit {str(result['environment']['commit'])[:10]}, "
        f"{result['when']}. fp32 and bf16 runs interleaved in this one run; the committed "
        "fp32 row is the same config trained earlier. Verdict: a tie when the means differ by "
        "at most two standard errors of the difference. s/epoch: the loop's clock over the "
        "training steps of an epoch (evaluations not counted); with eval.: seconds per step "
        "after the warm-up, evaluations included, times the steps of an epoch.",
        "",
        "| task | fp32 (this run) | bf16 | bf16 vs fp32 | fp32 committed | fp32 vs committed "
        "| s/epoch fp32 | s/epoch bf16 | bf16 speed-up | with eval. s/epoch fp32 / bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, t in result["tasks"].items():
        acc = {k: [r["final_test_acc"] for r in v] for k, v in t["runs"].items()}
        spe, wall = t["seconds_per_epoch"], t["with_eval_seconds_per_epoch"]
        speed = f"{t['speedup_bf16']:.2f}x" if t["speedup_bf16"] else "—"
        lines.append(
            f"| {task} | {format_mean_std(acc['fp32'])} (n={len(acc['fp32'])}) "
            f"| {format_mean_std(acc['bf16'])} (n={len(acc['bf16'])}) | {t['bf16_vs_fp32']} "
            f"| {format_mean_std(acc['fp32_committed'])} | {t['fp32_vs_committed']} "
            f"| {_secs(spe['fp32'])} | {_secs(spe['bf16'])} | {speed} "
            f"| {_secs(wall['fp32'])} / {_secs(wall['bf16'])} |"
        )
    lines += [
        "",
        "Time to accuracy: training seconds (the loop's clock, evaluations not counted) at "
        "the first evaluation whose test accuracy reaches the target, per seed; — where a "
        "run never reached it.",
        "",
        "| task | target | fp32 | bf16 |",
        "|---|---|---|---|",
    ]
    for task, t in result["tasks"].items():
        cells = [" / ".join("—" if v is None else f"{v:.0f}" for v in t["seconds_to_target"][p])
                 for p in PRECISIONS]  # fmt: skip
        lines.append(f"| {task} | {t['target_test_acc']:g}% | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bf16-parity")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, action="append", default=None,
                   help="run only this seed (repeatable): lanes in parallel, one per core")  # fmt: skip
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of: " + ", ".join(TASKS))
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run (1 on a shared machine)")
    p.add_argument("--data-dir", default=None, help="data folder (else $SUPERCONV_DATA)")
    p.add_argument("--iterations", type=int, default=None, help="cut each run short (smoke test)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--report-only", action="store_true", help="tables from the runs made so far")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        p.error(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    if not cpu_has_native_bf16():
        print("note: this CPU has no native bf16 (AVX512-BF16 / AMX): bf16 is emulated and slow.")
    if not args.report_only:
        for seed in args.seed if args.seed is not None else range(args.seeds):
            for task in tasks:
                for precision in PRECISIONS:
                    run_one(task, precision, seed, args.out, args)
    result = summarise(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "parity.json", result)
    (args.out / "parity.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
