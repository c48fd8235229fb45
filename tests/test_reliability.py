"""Reliability, round 2 (issue 24): faults end cleanly, run folders are locked, SIGTERM
checkpoints.

The bad inputs of this round are rows of the matrix in ``test_hardening.py``; here
are the cases that need more than one command: a resume with where-keys changed,
a divergence before the first checkpoint, disk-full and I/O errors injected into
the checkpoint and metrics writes, the run-folder lock, and SIGTERM.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, metrics_without_time, tiny_train

from superconv import checkpoint as ckpt
from superconv import cli, records
from superconv.cli import main
from superconv.records import read_csv
from superconv.train import train


@pytest.fixture(autouse=True)
def _restore_torch_state():
    # --threads and --deterministic set process-wide torch state in in-process runs.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The uninterrupted run (30 iterations, checkpoints at 10, 20, 30): the oracle."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(tiny_train(run)) == 0
    return run


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- resume
def test_resume_with_other_threads_device_and_data_dir_continues(finished, tmp_path):
    """threads, device and data dir say where a run runs, not what it is (WHERE_KEYS): a
    killed ``reproduce`` resumed with another --threads continues the run, exactly."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = ckpt.load(run / "checkpoint.pt")
    state.pop("format_version")
    state.update(step=10, metrics=state["metrics"][:1])
    ckpt.save(run / "checkpoint.pt", state)  # as if killed after the first checkpoint
    (run / "summary.json").unlink()
    config = cli._recorded_config(run)
    assert config.threads == 1
    moved = config.replace(threads=None, data_dir=str(tmp_path / "elsewhere"))
    with pytest.raises(Exception, match="different run"):  # the oracle of the check itself
        train(config.replace(seed=7), run, resume=True, progress=False)
    result = train(moved, run, resume=True, progress=False)
    assert result.summary["status"] == "finished"
    assert [r["iteration"] for r in read_csv(run / "metrics.csv")] == [10, 20, 30]


def test_divergence_before_the_first_checkpoint_does_not_claim_one(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--iterations", "30", "--log-every", "1", "--policy", "constant",
            "--policy-param", "lr=1e30", "--out", str(run)]  # fmt: skip
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert re.search(
        r"^superconv: error: training diverged: the training loss became NaN/inf at iteration "
        r"\d \(lr 1e\+30\)\. .*; no checkpoint was written yet \(the first is at iteration 10\)",
        err,
    ), err
    assert "last good checkpoint is kept" not in err
    assert not (run / "checkpoint.pt").exists()


def test_a_class_too_small_for_the_subset_is_a_user_error(monkeypatch, tmp_path, capsys):
    """Real MNIST is unbalanced (5,421 fives in 60,000): a balanced subset can need more
    images of a class than there are. Made here from the demo set by dropping fives."""
    import superconv.data as data_module

    real = data_module.load_dataset

    def fewer_fives(name, data_dir=None, **kw):
        ds = real(name, data_dir, **kw)
        keep = torch.nonzero(ds.train_y != 5).reshape(-1)[:-10]
        keep = torch.cat([keep, torch.nonzero(ds.train_y == 5).reshape(-1)[:10]])
        return data_module.Dataset(
            ds.name, ds.train_x[keep], ds.train_y[keep], ds.test_x, ds.test_y, ds.classes,
            ds.mean, ds.std,
        )  # fmt: skip

    monkeypatch.setattr(data_module, "load_dataset", fewer_fives)
    assert main(tiny_train(tmp_path / "run", "--train-subset", "200")) == 2
    err = capsys.readouterr().err
    assert (
        "superconv: error: train_subset (200): class 5 has 10 samples, fewer than the 20 per "
        "class that n=200 needs" in err
    ), err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- faults
class _Fault(OSError):
    def __init__(self, code: int, where):
        super().__init__(code, os.strerror(code), str(where))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("target", ["checkpoint.pt", "metrics.csv"])
def test_a_failed_write_names_the_path_says_what_to_do_and_the_run_resumes_exactly(
    finished, tmp_path, monkeypatch, capsys, code, target
):
    """ENOSPC or EIO from the second write of ``target`` (at iteration 20): exit 2, the
    message names the file and what to do, the last good state is intact, and the run
    resumes to the uninterrupted run's metrics, bit for bit."""
    run = tmp_path / "run"
    real_fdopen = os.fdopen
    seen = []

    def fdopen(fd, *args, **kw):
        f = real_fdopen(fd, *args, **kw)
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name if Path("/proc").is_dir() else ""
        if name.startswith(f".{target}."):
            seen.append(name)
            # metrics.csv is written once before the loop, then at 10 and 20
            if len(seen) == (2 if target == "checkpoint.pt" else 3):
                f.close()
                raise _Fault(code, run / target)
        return f

    monkeypatch.setattr(records.os, "fdopen", fdopen)
    assert main(tiny_train(run)) == 2
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"superconv: error: {os.strerror(code)} ({run / target}).")
    advice = "free space there" if code == errno.ENOSPC else "check it"
    assert advice in err and "--resume RUN_DIR" in err
    assert ckpt.load(run / "checkpoint.pt")["step"] == 10  # the last good checkpoint, whole
    iterations = [r["iteration"] for r in read_csv(run / "metrics.csv")]
    assert iterations == ([10, 20] if target == "checkpoint.pt" else [10])
    assert not temp_files(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert metrics_without_time(run / "metrics.csv") == metrics_without_time(
        finished / "metrics.csv"
    )


# ----------------------------------------------------------------------------- the lock
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("SUPERCONV_DEBUG", None)
    return env


def _wait_for(predicate, proc: subprocess.Popen, what: str, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (code {proc.returncode}) before {what}: "
                        f"{proc.communicate()[1]}")  # fmt: skip
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {limit} s")
        time.sleep(0.02)


def test_a_live_run_folder_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(
    tmp_path, capsys
):
    run = tmp_path / "run"
    # A real `superconv train`, long enough to be alive while this test knocks.
    live = subprocess.Popen(
        [sys.executable, "-m", "superconv.cli", *tiny_train(run)[:-2], "--out", str(run),
         "--iterations", "100000"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock = run / records.LOCK_FILE
    try:
        _wait_for(lambda: (run / "metrics.csv").exists(), live, "metrics.csv")
        assert lock.read_text() == f"{live.pid}\n"  # the holder's pid, beside the run
        in_flight = run / ".metrics.csv.abc123.tmp"  # as if the live run were writing it
        in_flight.write_text("being written")
        config_before = (run / "config.json").read_bytes()
        env_before = (run / "env.json").stat().st_mtime_ns
        for argv in (tiny_train(run), tiny_train(run, "--seed", "4"),
                     ["train", "--resume", str(run), "--no-progress"]):  # fmt: skip
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err == (
                f"superconv: error: {run} is in use: process {live.pid} is running a run there "
                f"(it holds {lock}). Wait for it to end or stop it (kill {live.pid}), then "
                f"resume with --resume {run}; or choose another output folder.\n"
            ), err
        # nothing of the live run was touched, its temporary file included
        assert in_flight.read_text() == "being written"
        assert (run / "config.json").read_bytes() == config_before
        assert (run / "env.json").stat().st_mtime_ns == env_before
    finally:
        live.kill()
        live.communicate()
    # SIGKILL: the OS dropped the flock, the dead pid is still written there (stale).
    assert lock.read_text() == f"{live.pid}\n"
    in_flight.unlink()
    opened = records.RunDir.open(
        run, json.loads((run / "config.json").read_text()), {}, resume=True, lock=True
    )
    try:
        assert opened._lock.taken_over == live.pid  # detected and taken over
        assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        opened.close()
    assert lock.read_text() == ""  # released: emptied


def test_the_lock_helper_is_exclusive_across_processes_and_run_claim_wraps_it(tmp_path):
    from superconv import runner

    path = tmp_path / "row" / "seed0"
    path.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from superconv.records import claim\n"
         "with claim(sys.argv[1]) as mine:\n"
         "    print(mine, flush=True); time.sleep(60)",
         str(path.parent / ".seed0.lock")],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "True"
        with runner.run_claim(path) as mine:
            assert not mine  # held by the other process
        lock = records.FileLock(path.parent / ".seed0.lock")
        assert lock.holder() == holder.pid
    finally:
        holder.kill()
        holder.communicate()
    with runner.run_claim(path) as mine:  # the holder died: free again
        assert mine
        assert (path.parent / ".seed0.lock").read_text() == f"{os.getpid()}\n"
    assert (path.parent / ".seed0.lock").stat().st_size == 0


# ----------------------------------------------------------------------------- SIGTERM
SIGTERM_TRAIN = [
    "--model", "lenet", "--dataset", "mnist-demo", "--normalize", "unit", "--no-flip",
    "--batch-size", "16", "--eval-batch-size", "1000", "--device", "cpu", "--threads", "1",
    "--deterministic", "--no-progress", "--iterations", "120", "--eval-every", "10",
    "--checkpoint-every", "10", "--log-every", "1", "--policy", "one_cycle",
    "--precision", "fp32",  # fp32 on every CPU: the reference and the resumed run compare bit for bit
    "--policy-param", "max_lr=0.05",
]  # fmt: skip


def _rows(run) -> int:
    """Rows of a run's metrics.csv (one per evaluation); 0 before it exists."""
    try:
        return max(0, len((run / "metrics.csv").read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_sigterm_checkpoints_exits_143_and_the_resumed_run_is_bit_identical(tmp_path, capsys):
    """SIGTERM at random steps (seeded): the loop finishes the step, writes a checkpoint
    there, says how to resume and exits 143; resumed, the run ends with the metrics,
    summary and weights of the uninterrupted run, bit for bit (CPU, --deterministic)."""
    reference = tmp_path / "reference"
    assert main(["train", *SIGTERM_TRAIN, "--out", str(reference)]) == 0
    run = tmp_path / "run"
    rng = random.Random(24)
    stops = []
    argv = ["train", *SIGTERM_TRAIN, "--out", str(run)]
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "superconv.cli", *argv],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = time.time_ns()

        def stepped(started: int = started, before: int = _rows(run)) -> bool:
            """A row of this process's past its start: the loop is running, rows ahead."""
            try:
                fresh = (run / "metrics.csv").stat().st_mtime_ns >= started
            except FileNotFoundError:
                return False
            return fresh and _rows(run) > before

        # Tied to a step, not to a wall-clock delay: a fixed sleep let a fast machine
        # finish the run before the signal. Past the next evaluation row (every 10 steps)
        # there are 70+ steps left; the jitter lands the signal on a random one of them.
        _wait_for(stepped, proc, "the training loop's next evaluation")
        time.sleep(rng.uniform(0.0, 0.05))  # a few ms a step
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
        state = ckpt.load(run / "checkpoint.pt")
        stops.append(state["step"])
        assert proc.returncode == 143, err
        assert (
            f"superconv: interrupted: interrupted at iteration {state['step']}; checkpoint saved "
            f"in {run / 'checkpoint.pt'}. Resume with --resume {run}." in err
        ), err
        assert len(err.strip().splitlines()) == 1, err
        assert not (run / "summary.json").exists()
        argv = ["train", "--resume", str(run), "--no-progress"]
    assert main(argv) == 0
    assert 0 < stops[0] < stops[1] < 120, stops
    assert metrics_without_time(run / "metrics.csv") == metrics_without_time(
        reference / "metrics.csv"
    )
    done, expected = (
        json.loads((run / "summary.json").read_text()),
        json.loads((reference / "summary.json").read_text()),
    )
    for timing in ("wall_time", "seconds_per_step"):  # how long, not what the run is
        done.pop(timing), expected.pop(timing)
    assert done == expected
    final, oracle = ckpt.load(run / "checkpoint.pt"), ckpt.load(reference / "checkpoint.pt")
    for name, tensor in oracle["model"].items():
        assert torch.equal(final["model"][name], tensor), name


def test_a_run_recorded_with_more_threads_than_this_machine_has_resumes(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = json.loads((run / "config.json").read_text())
    config["threads"] = (os.cpu_count() or 1) + 1  # made on a bigger machine
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"The run used {config['threads']} threads; this machine has {os.cpu_count()}" in out
