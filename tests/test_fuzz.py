"""Property-based fuzzing (issue 24): hostile command lines and damaged files end cleanly.

Two properties, checked with Hypothesis:

* **The command line.** Random combinations of ``superconv train`` flags and values
  (wrong types, signs, zero, huge numbers, NaN and inf strings, unicode, empty
  strings, unknown flags; paths that are files, folders, missing, or under a regular
  file, where nothing can be written even as root) either run a few LeNet steps on
  the bundled MNIST subset (exit 0, or 3 if the loss diverged) or exit 2 with one
  ``superconv: error: ...`` line: never exit 1, a traceback or a signal. Most cases
  run in-process through :func:`superconv.cli.main`; a small sample as subprocesses
  (the only way to see a segfault). Valid cases are capped at 3 iterations of LeNet
  (no value drawn for ``--iterations`` or ``--model`` allows more); ``--compile`` is
  left out (it is slow, not hostile).
* **The readers.** Valid CIFAR binary batches, IDX files (raw and gzipped),
  checkpoints, and a run's metrics.csv / summary.json / config.json are truncated,
  bit-flipped, overwritten, extended or replaced, then read: the reader returns, or
  raises a :class:`~superconv.errors.UserError` naming the file; nothing else.

Profiles: ``ci`` (the default: a fixed seed, bounded examples, about a minute on 2
CPU cores) and ``long`` for local runs (random seeds, many more examples)::

    SUPERCONV_FUZZ=long python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from superconv import checkpoint as ckpt  # noqa: E402
from superconv.cli import main  # noqa: E402
from superconv.data.formats import (  # noqa: E402
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    encode_idx,
    read_cifar_binary,
    read_idx,
    read_idx_split,
)
from superconv.errors import UserError  # noqa: E402
from superconv.runs import read_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_COMMON = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("long", derandomize=False, **_COMMON)
PROFILE = os.environ.get("SUPERCONV_FUZZ", "ci")
LONG = PROFILE == "long"


def examples(ci: int, long: int) -> settings:
    """The profile's settings with ``ci`` examples (``long`` under SUPERCONV_FUZZ=long)."""
    return settings(settings.get_profile(PROFILE), max_examples=long if LONG else ci)


# ----------------------------------------------------------------------------- workspace
@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """Paths of every kind, config files of every kind, and a finished 3-iteration run."""
    ws = tmp_path_factory.mktemp("fuzz")
    (ws / "afile").write_text("a regular file\n")
    (ws / "adir").mkdir()
    (ws / "good.toml").write_text('model = "lenet"\niterations = 2\n')
    (ws / "bad.toml").write_text("iterations = = 3\n")
    (ws / "latin1.toml").write_bytes("# caf\u00e9\nseed = 1\n".encode("latin-1"))
    (ws / "types.toml").write_text('iterations = "many"\n[policy_params]\nmax_lr = "x"\n')
    (ws / "unknown.toml").write_text("bach_size = 3\n")
    (ws / "params.toml").write_text('policy = "constant"\n[policy_params]\nlr = 1e30\n')
    run = ws / "run"
    with _quiet():
        assert main(["train", *BASE, "--out", str(run)]) == 0
    return ws


@contextlib.contextmanager
def _quiet():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


# A valid starting point that every random flag may override (argparse: the last wins).
BASE = [
    "--model", "lenet", "--dataset", "mnist-demo", "--iterations", "3", "--batch-size", "16",
    "--eval-batch-size", "1000", "--device", "cpu", "--threads", "1", "--eval-every", "3",
    "--checkpoint-every", "3", "--normalize", "unit", "--policy", "one_cycle",
    "--policy-param", "max_lr=0.01", "--no-progress",
]  # fmt: skip

HUGE = "1180591620717411303424"  # 2**70
INTS = ["0", "-1", "1", "2", "3", "7", "16", HUGE, "x", "1.5", "nan", "", "none", "\u0663", "1e3"]
FLOATS = ["0", "-0.5", "0.9", "1", "1e308", "1e-320", "nan", "inf", "-inf", "x", "", "1e38",
          "0.01", "\u00bd"]  # fmt: skip
PATHS = ["afile", "adir", "missing", "afile/under", "run", "", "caf\u00e9/\u2603"]
VALUES = {
    "--model": ["lenet", "resnt20", "", "\U0001f4a5", "lenet "],
    "--dataset": ["mnist-demo", "mnist", "cifar10", "minst", "\u00e9"],
    "--data-dir": PATHS,
    "--iterations": ["1", "2", "3", "0", "-1", "x", "nan", "", "3.0"],
    "--batch-size": ["1", "7", "16", "0", "-3", HUGE, "x"],
    "--eval-batch-size": ["1000", "7", "0", "-1", "x", HUGE],
    "--train-subset": ["none", "10", "100", "5", "0", "-10", "1000000", "x"],
    "--val-size": ["0", "10", "1000", "9999", "10000", "-1", "x"],
    "--split-seed": ["0", "1", "-1", "4294967296", HUGE, "x"],
    "--seed": ["0", "1", "-1", "4294967295", HUGE, "x", "\u0663"],
    "--policy": ["clr", "one_cycle", "constant", "cosine", "step", "bogus", ""],
    "--policy-param": [
        "max_lr=0.01",
        "max_lr=1e308",
        "max_lr=NaN",
        "max_lr=-1",
        "min_lr=0.001",
        "lr=0.01",
        "lr=1e30",
        "momentum=[0.95,0.85]",
        "momentum=false",
        "step_size=0",
        "stepsize=5",
        "=3",
        "noequals",
        'max_lr="x"',
        "max_lr=[1,2]",
        "max_lr=1e-320",
        "div=0",
        "max_lr=Infinity",
        "pct_start=2",
        "three_phase=true",
    ],  # fmt: skip
    "--optimizer": ["sgd", "nesterov", "adam", "adamw", "adagrad", "adadelta", "adamm", ""],
    "--momentum": FLOATS,
    "--weight-decay": FLOATS,
    "--bn-maf": FLOATS,
    "--dropout": FLOATS,
    "--bn-mode": ["caffe", "torch", "x"],
    "--ghost-batch": ["none", "0", "-1", "1", "4", "16", "3", HUGE],
    "--crop-pad": ["0", "2", "4", "-1", "33", "100000"],
    "--normalize": ["unit", "mean_std", "x"],
    "--eval-every": ["1", "2", "3", "0", "-1", HUGE, "x"],
    "--log-every": ["1", "2", "0", "-1", HUGE],
    "--checkpoint-every": ["1", "3", "6", "0", "-1", HUGE],
    "--estimator-k": ["none", "1", "2", "0", "-1"],
    "--device": ["cpu", "cuda:99", "meta", "tpu", "", "cpu:0", "cuda:-1"],
    "--precision": ["auto", "fp32", "fp64", "bf16", "fp8"],
    "--threads": ["1", "none", "0", "-2", "100000", HUGE],
    "--out": PATHS,
    "--config": [
        *PATHS,
        "good.toml",
        "bad.toml",
        "latin1.toml",
        "types.toml",
        "unknown.toml",
        "params.toml",
    ],  # fmt: skip
    "--resume": PATHS,
}
VALUES_OF_CONFIG = [
    "model", "dataset", "data_dir", "train_subset", "val_size", "split_seed", "iterations",
    "batch_size", "policy", "policy_params", "optimizer", "momentum", "weight_decay", "bn_maf",
    "bn_mode", "ghost_batch", "sync_bn", "dropout", "flip", "crop_pad", "normalize", "seed",
    "eval_every", "log_every", "checkpoint_every", "eval_batch_size", "estimator_k", "device",
    "precision", "channels_last", "compile", "deterministic", "threads", "bogus_key",
]  # fmt: skip
SWITCHES = ["--flip", "--no-flip", "--channels-last", "--no-channels-last", "--deterministic",
            "--no-deterministic", "--sync-bn", "--bogus", "--iteration", "-x"]  # fmt: skip
PATH_FLAGS = {"--data-dir", "--out", "--config", "--resume"}


@st.composite
def command_lines(draw) -> list[str]:
    """``train`` + BASE + up to 6 random flags with random values (paths relative to ws)."""
    flags = draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=6))
    argv = ["train", *BASE]
    for flag in flags:
        argv += [flag, draw(st.sampled_from(VALUES[flag]))]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2))
    return argv


_counter = itertools.count()
ERROR_LINE = re.compile(r"^superconv( [a-z-]+)?: error: ")
BUG = re.compile(r"error: unexpected \w+: |This is a bug")  # main()'s last line of defence


def resolve(argv: list[str], ws: Path) -> list[str]:
    """Paths relative to ``ws``, and a fresh --out folder unless one was drawn."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] in PATH_FLAGS and out[i + 1] and not out[i + 1].startswith("-"):
            out[i + 1] = str(ws / out[i + 1])
    if "--out" not in out and "--resume" not in out:
        out += ["--out", str(ws / "fresh" / str(next(_counter)))]
    return out


def check_outcome(code: int, err: str, argv: list[str]) -> None:
    """Exit 0, or 3 (diverged), or 2 with one ``superconv: error:`` line; nothing else."""
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2, 3), (argv, code, err)
    if code:
        # ours, or argparse's "superconv train: error: ..." (after its usage lines)
        errors = [line for line in err.splitlines() if ERROR_LINE.match(line)]
        assert len(errors) == 1, (argv, err)
        assert len(errors[0]) > 30, (argv, err)
        assert not BUG.search(errors[0]), (argv, err)


@contextlib.contextmanager
def isolated_process_state(ws: Path):
    """No real data (SUPERCONV_DATA points at nothing), and torch's process-wide state
    (threads, deterministic mode) restored after each case."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    saved = os.environ.get("SUPERCONV_DATA")
    os.environ["SUPERCONV_DATA"] = str(ws / "missing")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SUPERCONV_DATA", None)
        else:
            os.environ["SUPERCONV_DATA"] = saved
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@examples(ci=150, long=3000)
@given(argv=command_lines())
def test_fuzz_the_command_line_in_process(ws, argv):
    argv = resolve(argv, ws)
    with isolated_process_state(ws), _quiet() as (_, err):
        code = main(argv)
    hypothesis.event(f"exit {code}")  # the spread: pytest --hypothesis-show-statistics
    check_outcome(code, err.getvalue(), argv)


@examples(ci=4, long=100)
@given(argv=command_lines())
def test_fuzz_the_command_line_as_subprocesses(ws, argv):
    argv = resolve(argv, ws)
    env = {**os.environ, "SUPERCONV_DATA": str(ws / "missing")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("SUPERCONV_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "superconv.cli", *argv],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode >= 0, (argv, f"killed by signal {-proc.returncode}", proc.stderr)
    check_outcome(proc.returncode, proc.stderr, argv)


def test_the_fuzzer_reaches_both_outcomes_and_a_cli_bug_would_fail_it(ws, monkeypatch):
    """The property is not vacuous: fixed draws that run (0) and that are refused (2); an
    exception escaping as exit 1 is caught by check_outcome."""
    with isolated_process_state(ws), _quiet() as (_, err):
        assert main(resolve(["train", *BASE], ws)) == 0
        assert main(resolve(["train", *BASE, "--ghost-batch", "0"], ws)) == 2
    with pytest.raises(AssertionError):
        check_outcome(1, "superconv: error: unexpected ZeroDivisionError: ...", [])
    with pytest.raises(AssertionError):
        check_outcome(2, "Traceback (most recent call last):\nsuperconv: error: x", [])


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.floats(), st.integers(-5, 5)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.floats(), st.integers(), st.text(max_size=4)),
                    max_size=3),
)  # fmt: skip


@examples(ci=300, long=20000)
@given(st.dictionaries(st.sampled_from(sorted(VALUES_OF_CONFIG)), ANY_VALUE, max_size=6))
def test_fuzz_train_config(fields):
    """TrainConfig.from_dict + the command line's early checks (validate, the policy, the
    model's name) on random values of random types: a config, or a UserError; nothing
    else. (A TOML file or config.json reaches TrainConfig this way.)"""
    from superconv.cli import _check_early
    from superconv.train import TrainConfig

    try:
        config = TrainConfig.from_dict({"model": "lenet", "dataset": "mnist-demo", **fields})
        _check_early(config)
    except UserError as exc:
        assert str(exc).strip(), fields


# ----------------------------------------------------------------------------- the readers
@st.composite
def damage(draw, data: bytes) -> bytes:
    """``data`` truncated, bit-flipped, overwritten, extended, emptied or replaced."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "append", "empty", "random"]))
    n = len(data)
    if kind == "truncate":
        return data[: draw(st.integers(0, max(n - 1, 0)))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            bit = draw(st.integers(0, 8 * n - 1))
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    if kind == "overwrite":
        start = draw(st.integers(0, max(n - 1, 0)))
        return data[:start] + draw(st.binary(min_size=1, max_size=64)) + data[start + 64 :]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=4096))
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=4096))


def _reads_or_user_error(read, path: Path) -> object:
    try:
        return read()
    except UserError as exc:
        assert str(path) in str(exc), exc  # the message names the file
        return exc


@examples(ci=60, long=3000)
@given(st.data(), st.sampled_from(["cifar10", "cifar100"]), st.integers(1, 4))
def test_fuzz_cifar_binary(tmp_path, data, kind, rows):
    rng = np.random.default_rng(rows)
    label_bytes = 1 if kind == "cifar10" else 2
    table = rng.integers(0, 256, (rows, label_bytes + 3072), dtype=np.uint8)
    table[:, label_bytes - 1] %= 10 if kind == "cifar10" else 100
    if kind == "cifar100":
        table[:, 0] %= 20
    path = tmp_path / "data_batch.bin"
    path.write_bytes(data.draw(damage(table.tobytes())))
    for expected in (None, rows):
        _reads_or_user_error(lambda e=expected: read_cifar_binary(path, kind=kind, rows=e), path)


@examples(ci=80, long=3000)
@given(st.data(), st.booleans(), st.integers(0, 5))
def test_fuzz_idx(tmp_path, data, compress, count):
    rng = np.random.default_rng(count)
    images = encode_idx(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), compress=compress)
    labels = encode_idx(rng.integers(0, 10, count, dtype=np.uint8), compress=compress)
    which = data.draw(st.sampled_from(["images", "labels"]))
    images_path, labels_path = tmp_path / "images-idx3-ubyte", tmp_path / "labels-idx1-ubyte"
    images_path.write_bytes(data.draw(damage(images)) if which == "images" else images)
    labels_path.write_bytes(data.draw(damage(labels)) if which == "labels" else labels)
    damaged = images_path if which == "images" else labels_path
    magic = IDX_IMAGES_MAGIC if which == "images" else IDX_LABELS_MAGIC
    _reads_or_user_error(lambda: read_idx(damaged, magic=magic), damaged)
    result = _reads_or_user_error(lambda: read_idx_split(images_path, labels_path), tmp_path)
    if not isinstance(result, Exception):
        assert len(result[0]) == len(result[1])


@pytest.fixture(scope="module")
def checkpoint_bytes(ws) -> bytes:
    return (ws / "run" / "checkpoint.pt").read_bytes()


@examples(ci=60, long=2000)
@given(data=st.data())
def test_fuzz_checkpoint_bytes(tmp_path, checkpoint_bytes, data):
    from superconv.train import _check_state, _new_sums

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data.draw(damage(checkpoint_bytes)))
    state = _reads_or_user_error(lambda: ckpt.load(path), path)
    if isinstance(state, dict):  # a flip inside tensor data loads: the state check comes next
        _reads_or_user_error(
            lambda: _check_state(path, state, _new_sums(torch.device("cpu")), 3), path
        )


# A checkpoint entry replaced by a value of another type, or removed.
ODD_VALUES = [None, 0, -1, 10**30, 1.5, float("nan"), "x", [], {}, [1], {"a": 1},
              torch.zeros(0), torch.zeros(3, dtype=torch.uint8), True]  # fmt: skip
ENTRIES = ["step", "elapsed", "metrics", "model", "optimizer", "sums", "rng", "observers",
           "estimator", "config", "sums.loss", "sums.bad_step", "rng.0", "rng.0.cpu",
           "optimizer.param_groups", "optimizer.state", "metrics.0"]  # fmt: skip


def _edit(state: dict, entry: str, value: object, remove: bool) -> None:
    *parents, last = entry.split(".")
    target = state
    for key in parents:
        if isinstance(target, list):
            target = target[int(key)] if len(target) > int(key) else None
        elif isinstance(target, dict):
            target = target.get(key)
        else:
            return
    if not isinstance(target, (list, dict)):
        return  # an earlier edit replaced the parent: nothing left to edit
    if isinstance(target, list):
        if remove:
            target.pop(int(last)) if target else None
        elif target:
            target[int(last)] = value
    elif remove:
        target.pop(last, None)
    else:
        target[last] = value


def _digest(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@examples(ci=12, long=400)
@given(
    st.lists(
        st.tuples(st.sampled_from(ENTRIES), st.sampled_from(ODD_VALUES), st.booleans()),
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_checkpoint_entries_through_resume(ws, tmp_path_factory, edits):
    """Partial or mistyped entries: `train --resume` finishes (exit 0) or refuses (exit 2)
    with the run folder exactly as it was."""
    run = tmp_path_factory.mktemp("resume") / "run"
    shutil.copytree(ws / "run", run)
    state = ckpt.load(run / "checkpoint.pt")
    state.pop("format_version")
    for entry, value, remove in edits:
        _edit(state, entry, value, remove)
    ckpt.save(run / "checkpoint.pt", state)
    before = _digest(run)
    argv = ["train", "--resume", str(run), "--no-progress"]
    with isolated_process_state(ws), _quiet() as (_, err):
        code = main(argv)
    check_outcome(code, err.getvalue(), [*argv, edits])
    assert code in (0, 2), (edits, err.getvalue())
    if code == 2:
        assert _digest(run) == before, edits


@examples(ci=60, long=2000)
@given(st.data(), st.sampled_from(["metrics.csv", "summary.json", "config.json"]))
def test_fuzz_run_files_read_by_report(ws, tmp_path, data, name):
    seed0 = tmp_path / str(next(_counter)) / "row" / "seed0"
    seed0.mkdir(parents=True)
    for other in ("metrics.csv", "summary.json", "config.json"):
        shutil.copy(ws / "run" / other, seed0 / other)
    (seed0 / name).write_bytes(data.draw(damage((ws / "run" / name).read_bytes())))
    _reads_or_user_error(lambda: read_run(seed0), seed0 / name)


@examples(ci=8, long=300)
@given(st.data(), st.sampled_from(["metrics.csv", "summary.json", "config.json"]))
def test_fuzz_report_command(ws, tmp_path_factory, data, name):
    """The whole `superconv report` on a damaged file: a report, or exit 2 and no plots/."""
    results = tmp_path_factory.mktemp("report")
    seed0 = results / "row" / "seed0"
    seed0.mkdir(parents=True)
    for other in ("metrics.csv", "summary.json", "config.json"):
        shutil.copy(ws / "run" / other, seed0 / other)
    (seed0 / name).write_bytes(data.draw(damage((ws / "run" / name).read_bytes())))
    with _quiet() as (_, err):
        code = main(["report", str(results)])
    check_outcome(code, err.getvalue(), [name])
    assert code in (0, 2)
    if code == 2:
        assert not (results / "plots").exists()
        assert str(seed0) in err.getvalue()
