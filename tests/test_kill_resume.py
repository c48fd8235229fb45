"""Nothing lost (issue 7): training processes killed at random moments resume exactly.

A real ``python -m superconv.cli train`` process (LeNet on the bundled MNIST
subset, 100 iterations, a checkpoint every 10) is killed with SIGKILL at random
moments, resumed with ``--resume``, killed again, then interrupted with SIGINT
(Ctrl-C), which must save a checkpoint and exit with code 130, and resumed to
the end. The oracle is the same run made without interruption: every column of
metrics.csv but the wall time, summary.json and the final weights must be
bit-identical. The kill moments are drawn from a seeded generator *relative to
the run's own progress* (a random evaluation row reached, then a random fraction
of the measured time between rows), so they fall at comparable points of the run
on a quiet or a loaded machine: mid-step, mid-evaluation or mid-checkpoint-write.

A ``reproduce`` sweep killed during its second run keeps the first run untouched,
resumes the second and finishes the rest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import metrics_without_time

from superconv import checkpoint as ckpt
from superconv import paper
from superconv.cli import main
from superconv.plan import Experiment, Plan, Sweep, Train, Tuned
from superconv.records import read_csv
from superconv.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS, EVERY = 100, 10  # a checkpoint (and a metrics row) every 10 iterations
ROWS = ITERATIONS // EVERY
TRAIN = [
    "--model", "lenet", "--dataset", "mnist-demo", "--normalize", "unit", "--no-flip",
    "--batch-size", "32", "--eval-batch-size", "1000", "--device", "cpu", "--threads", "1",
    "--deterministic", "--no-progress", "--iterations", str(ITERATIONS), "--eval-every",
    str(EVERY), "--checkpoint-every", str(EVERY), "--policy", "one_cycle",
    "--policy-param", "max_lr=0.05",
]  # fmt: skip
POLL = 0.01  # seconds between looks at the run folder
STARTUP_LIMIT = 180  # seconds a process may take to reach its kill point on a busy machine


@pytest.fixture(autouse=True)
def _restore_torch_state():
    # --threads and --deterministic set process-wide torch state in in-process runs.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("SUPERCONV_DEBUG", None)
    return env


def launch(*args: str, code: str | None = None) -> subprocess.Popen:
    """``python -m superconv.cli ARGS`` (or ``python -c CODE ARGS``) in its own process."""
    started = time.time_ns()
    proc = subprocess.Popen(
        [sys.executable, *(["-c", code] if code else ["-m", "superconv.cli"]), *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.started_ns = started  # files older than this were not written by this process
    return proc


def rows_written_by(proc: subprocess.Popen, run: Path) -> int | None:
    """The metrics rows in ``run`` if this process has written metrics.csv, else None.

    A process rewrites metrics.csv (atomically) just before its training loop starts,
    and after every evaluation.
    """
    try:
        if (run / "metrics.csv").stat().st_mtime_ns < proc.started_ns:
            return None
        return len((run / "metrics.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return None


def signal_at_random_moment(
    proc: subprocess.Popen, run: Path, target_row: int, rng: random.Random, sig: int
) -> dict:
    """Wait until the process has written metrics row ``target_row`` (its checkpoint is
    written right after), then for a random fraction of the time it took since the row
    before, then send ``sig``: the signal lands during the checkpoint write, the next
    training steps or the next evaluation."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + STARTUP_LIMIT
    while True:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(
                f"the process ended (code {proc.returncode}) before row {target_row}:\n{err}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no metrics row {target_row} within {STARTUP_LIMIT} s")
        rows = rows_written_by(proc, run)
        if rows is not None:
            seen.setdefault(rows, time.monotonic())
            if rows >= target_row and len(seen) > 1:
                break
        time.sleep(POLL)
    interval = seen[rows] - max(t for r, t in seen.items() if r < rows)
    delay = rng.random() * interval
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=STARTUP_LIMIT)
    return {"row": rows, "delay": round(delay, 3), "code": proc.returncode, "err": err}


def check_consistent(run: Path) -> int:
    """What a killed run leaves must be whole: a loadable checkpoint and a readable
    metrics.csv with the checkpoint's rows (and at most the one evaluated after it)."""
    state = ckpt.load(run / "checkpoint.pt")
    rows = read_csv(run / "metrics.csv")
    assert [r["iteration"] for r in rows[: len(state["metrics"])]] == [
        r["iteration"] for r in state["metrics"]
    ]
    assert len(rows) - len(state["metrics"]) in (0, 1)
    return int(state["step"])


def summary_without_time(path: Path) -> dict:
    summary = json.loads(path.read_text())
    summary.pop("wall_time"), summary.pop("seconds_per_step")  # timing, not the run
    return summary


def test_killed_and_interrupted_training_resumes_to_the_identical_result(tmp_path, capsys):
    kill_and_resume(tmp_path, capsys, TRAIN)


# Schedule-free SGD on a model with batch norm: its checkpoints hold the evaluation point x
# (optimizer.eval(), BN statistics recomputed there) and the training point y beside it.
SCHEDULE_FREE = [
    *TRAIN[: TRAIN.index("--policy")], "--model", "resnet8", "--policy", "constant",
    "--policy-param", "lr=0.1", "--optimizer", "schedulefree_sgd",
]  # fmt: skip


def test_killed_and_interrupted_schedule_free_training_resumes_to_the_identical_result(
    tmp_path, capsys
):
    pytest.importorskip("schedulefree", reason="needs the schedulefree extra")
    kill_and_resume(tmp_path, capsys, SCHEDULE_FREE)
    final = ckpt.load(tmp_path / "killed" / "checkpoint.pt")
    expected = ckpt.load(tmp_path / "reference" / "checkpoint.pt")
    for name, tensor in expected["train_point"].items():
        assert torch.equal(final["train_point"][name], tensor), name


def kill_and_resume(tmp_path: Path, capsys, args: list[str]) -> None:
    """Two SIGKILLs and a SIGINT at random moments of a ``train ARGS`` run, each resumed:
    metrics, summary and final weights bit-identical to the same run uninterrupted."""
    rows = int(args[args.index("--iterations") + 1]) // EVERY
    reference = tmp_path / "reference"
    assert main(["train", *args, "--out", str(reference)]) == 0
    assert len(read_csv(reference / "metrics.csv")) == rows

    run = tmp_path / "killed"
    rng = random.Random(7)
    events = []
    # Two SIGKILLs at random moments (the first after the first checkpoint), each resumed.
    proc = launch("train", *args, "--out", str(run))
    events.append(signal_at_random_moment(proc, run, rng.randint(2, 3), rng, signal.SIGKILL))
    assert events[-1]["code"] == -signal.SIGKILL, events  # killed, not finished
    done = check_consistent(run)
    proc = launch("train", "--resume", str(run), "--no-progress")
    target = done // EVERY + rng.randint(1, 2)
    events.append(signal_at_random_moment(proc, run, target, rng, signal.SIGKILL))
    assert events[-1]["code"] == -signal.SIGKILL, events
    done = check_consistent(run)

    # Ctrl-C: the loop stops at the next step boundary, saves a checkpoint and exits 130.
    proc = launch("train", "--resume", str(run), "--no-progress")
    target = done // EVERY + rng.randint(1, 2)
    events.append(signal_at_random_moment(proc, run, target, rng, signal.SIGINT))
    assert events[-1]["code"] == 130, events
    step = check_consistent(run)
    assert (
        f"superconv: interrupted: interrupted at iteration {step}; checkpoint saved in "
        f"{run / 'checkpoint.pt'}. Resume with --resume {run}." in events[-1]["err"]
    ), events
    assert not (run / "summary.json").exists()

    # The last resume, to the end: bit-identical to the uninterrupted run.
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert f"Resuming {run}" in capsys.readouterr().out
    assert metrics_without_time(run / "metrics.csv") == metrics_without_time(
        reference / "metrics.csv"
    ), events
    assert summary_without_time(run / "summary.json") == summary_without_time(
        reference / "summary.json"
    )
    final, expected = ckpt.load(run / "checkpoint.pt"), ckpt.load(reference / "checkpoint.pt")
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # stale ones removed


# ----------------------------------------------------------------------------- sweeps
TINY_EXPERIMENT = "tiny-sweep"


def _tiny_plan(scale) -> Plan:
    """Two sweep trials picking max_lr on a validation split, then the final run."""
    base = TrainConfig(
        model="lenet", dataset="mnist-demo", normalize="unit", flip=False, batch_size=32,
        iterations=40, eval_every=10, checkpoint_every=10, eval_batch_size=1000, threads=1,
        policy="one_cycle", policy_params={},
    )  # fmt: skip
    return Plan(
        scale,
        (
            Sweep("sweep", base.replace(val_size=1000), "max_lr", (0.01, 0.05)),
            Train("final", base, tuned=(Tuned("max_lr", "sweep"),)),
        ),
    )


def install_tiny_experiment(setattr=setattr) -> None:
    """Register :data:`TINY_EXPERIMENT` beside the real ones (for this process only)."""
    entries = paper._entries
    tiny = Experiment(TINY_EXPERIMENT, "Tiny sweep", "tests", "survives a kill", _tiny_plan)
    setattr(paper, "_entries", lambda: (*entries(), tiny))


# The command line with the tiny experiment registered: what `superconv` runs, plus it.
_SWEEP_CLI = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_kill_resume
test_kill_resume.install_tiny_experiment()
sys.exit(test_kill_resume.main(sys.argv[1:]))
"""


def snapshot(folder: Path) -> dict[str, tuple]:
    return {
        p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
    }


def test_a_killed_reproduce_sweep_keeps_finished_runs_and_continues(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    args = ["reproduce", TINY_EXPERIMENT, "--seeds", "1", "--device", "cpu", "--out", str(out),
            "--no-progress"]  # fmt: skip
    root = out / TINY_EXPERIMENT / "small"
    first, second = root / "sweep-max_lr0.01" / "seed0", root / "sweep-max_lr0.05" / "seed0"
    proc = launch(*args, code=_SWEEP_CLI)
    # SIGKILL once the first run has finished and the second has its first checkpoint.
    event = signal_at_random_moment(proc, second, 1, random.Random(3), signal.SIGKILL)
    assert event["code"] == -signal.SIGKILL, event
    assert json.loads((first / "summary.json").read_text())["status"] == "finished"
    assert not (second / "summary.json").exists()
    kept = snapshot(first)

    install_tiny_experiment(monkeypatch.setattr)
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 runs: 1 done, 1 to resume, 1 to start." in printed
    assert "[1/3] sweep-max_lr0.01/seed0: finished earlier, skipped" in printed
    assert "[2/3] sweep-max_lr0.05/seed0: resuming training (40 it)" in printed
    assert snapshot(first) == kept  # the finished run: not one byte rewritten
    summaries = {
        p.parent.parent.name: json.loads(p.read_text()) for p in root.glob("*/seed0/summary.json")
    }
    assert {k: s["status"] for k, s in summaries.items()} == dict.fromkeys(
        ("sweep-max_lr0.01", "sweep-max_lr0.05", "final"), "finished"
    )
    # The final run uses the sweep's pick: the trial with the higher validation accuracy.
    accs = {lr: summaries[f"sweep-max_lr{lr}"]["final_val_acc"] for lr in ("0.01", "0.05")}
    best = max(accs, key=accs.get)
    config = json.loads((root / "final" / "seed0" / "config.json").read_text())
    assert config["policy_params"]["max_lr"] == float(best)
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["invocations"]) == 2 and manifest["invocations"][0]["finished"] is None
    assert (root / "report.md").is_file()
