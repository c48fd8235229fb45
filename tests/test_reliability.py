"""Reliability, round 2 (issue 24): faults end cleanly, run folders are locked, SIGTERM
checkpoints.

The bad inputs of this round are rows of the matrix in ``test_hardening.py``; here
are the cases that need more than one command: a resume with where-keys changed,
a divergence before the first checkpoint, disk-full and I/O errors injected into
the checkpoint and metrics writes, the run-folder lock, and SIGTERM.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
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
