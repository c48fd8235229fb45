"""The one writer of a run directory, and the atomic-write helpers every writer uses.

A run directory holds::

    config.json    the TrainConfig that made the run (plus the policy it built)
    env.json       versions, device, CPU, threads, git commit, seed, command
    metrics.csv    one row per evaluation (iteration, lr, momentum, train and
                   validation / test loss and accuracy, wall time)
    summary.json   final metrics, written when the run ends (status says how)
    checkpoint.pt  written by :mod:`superconv.checkpoint`

Every file is written atomically: to a temporary file in the same folder,
flushed and fsync'ed, then renamed over the target, so a crash mid-write never
leaves a half file that a later read would trust.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from superconv.errors import RunDirError

METRIC_COLUMNS = (
    "iteration",
    "epoch",
    "lr",
    "momentum",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "wall_time",
)
# Where a run reads its data and which device or threads it uses, not what it is:
# a run may resume with these changed (moved data, another GPU).
WHERE_KEYS = frozenset({"data_dir", "device", "threads"})
CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
# The run folder's lock: an OS lock (flock) on this file, the holder's pid written in it.
LOCK_FILE = ".lock"


# ----------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; results are shared and committed, so give them the
        # mode a plain open() would (0666 less the umask).
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Never leave the temporary file behind, also on KeyboardInterrupt.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf become null)."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n")


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the folder entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the JSON is strict (readable everywhere)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _json_safe(obj.item())
    return obj


# ----------------------------------------------------------------------------- CSV
def format_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text with a header; missing values are empty cells.

    Floats are written with ``repr`` so that reading them back gives the same
    bits (the resume test compares metrics bit for bit).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_csv(path: str | os.PathLike) -> list[dict[str, float | int | None]]:
    """Read a CSV written by :func:`format_csv`: numbers parsed, empty cells None.

    A row with more cells than the header keeps the extra ones, parsed, as a list
    under the key ``None`` (csv.DictReader's way); readers that check rows refuse it.
    """
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {
                k: [_parse(x) for x in v] if isinstance(v, list) else _parse(v)
                for k, v in row.items()
            }
            for row in csv.DictReader(f)
        ]


def _parse(text: str | None) -> float | int | str | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


# ----------------------------------------------------------------------------- environment
def git_commit(folder: str | os.PathLike | None = None) -> str:
    """The git commit of ``folder`` (default: this package's source), '+dirty' if files
    tracked below ``folder`` are modified.

    Returns "unknown" outside a git checkout (an installed wheel, say).
    """
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        # Fixed arguments only: no user string ever reaches a shell.
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown"
        # Only changes below ``folder`` (the package source by default) make it dirty:
        # result files that runs are writing meanwhile say nothing about the code.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
        suffix = "+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return commit.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process, as a user would retype it (shell-quoted).

    ``python -m superconv ...`` leaves ``.../superconv/__main__.py`` in ``argv[0]``;
    it is written back as ``python -m superconv`` so the record can be rerun as is.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = Path(argv[0])
    head = (
        ["python", "-m", program.parent.name]
        if program.name == "__main__.py" and program.parent.name
        else [program.name]
    )
    return shlex.join([*head, *argv[1:]])


def environment(device: str = "cpu", seed: int | None = None) -> dict[str, Any]:
    """What a reader needs to reproduce a run: versions, device, commit, seed, command."""
    import numpy as np
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "commit": git_commit(),
        "seed": seed,
        "command": command_line(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


# ----------------------------------------------------------------------------- locks
class FileLock:
    """An exclusive OS lock (``fcntl.flock``) on ``path``, the holder's pid written in it.

    The OS drops the lock when its process ends, even on SIGKILL: a lock file left
    by a killed process (its pid still in it) is stale, and the next
    :meth:`acquire` takes it over. The lock file itself stays (deleting it would
    race with another process opening it); it is emptied on :meth:`release`.
    Where ``fcntl`` is missing (Windows) every acquire succeeds: run one process
    per folder there.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle: Any = None
        self._marked = False
        self.taken_over: int | None = None  # the pid of a dead holder whose lock was taken

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, *, wait: bool = False) -> bool:
        """Take the lock (creating the file); False if another holds it and not ``wait``."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return True
        if self.held:
            return True
        handle = open(self.path, "a+b")  # never truncates: the holder's pid stays readable
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        self.taken_over = self.holder()  # a pid still written there: its process is gone
        return True

    def mark(self) -> None:
        """Write this process's pid into the held lock file (for :meth:`holder`)."""
        if self._handle is None:
            return
        fd = self._handle.fileno()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # O_APPEND: at the start of the empty file
        self._marked = True

    def holder(self) -> int | None:
        """The pid written in the lock file, or None (empty, unreadable, no file)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        """Empty the lock file (if this process wrote its pid) and drop the lock."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            if self._marked:
                os.ftruncate(handle.fileno(), 0)
        finally:
            self._marked = False
            handle.close()  # closing the file drops the flock


@contextlib.contextmanager
def claim(path: str | os.PathLike, *, wait: bool = False) -> Iterator[bool]:
    """Hold :class:`FileLock` ``path`` for the block: yields True if this process got it
    (with its pid written in the file), False if another process holds it (``wait=False``)."""
    lock = FileLock(path)
    if not lock.acquire(wait=wait):
        yield False
        return
    try:
        lock.mark()
        yield True
    finally:
        lock.release()


def busy_message(folder: Path, lock: FileLock) -> str:
    pid = lock.holder()
    who = f"process {pid}" if pid is not None else "another process"
    return (
        f"{folder} is in use: {who} is running a run there (it holds {lock.path}). "
        f"Wait for it to end or stop it (kill {pid if pid is not None else 'PID'}), then "
        f"resume with --resume {folder}; or choose another output folder."
    )


# ----------------------------------------------------------------------------- run directory
class RunDir:
    """The files of one run. The only code that writes them (checkpoints aside).

    ``RunDir.open(path, config, env)`` makes or checks the folder: a folder that
    already holds a *different* run is refused (pass ``resume=True`` to continue
    the same one, or choose another folder).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock: FileLock | None = None

    # -- files
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    # -- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        config: Mapping[str, Any],
        env: Mapping[str, Any],
        *,
        resume: bool = False,
        lock: bool = False,
    ) -> RunDir:
        """Create ``path`` for a new run, or check it holds this run when resuming.

        ``lock``: hold the folder's :data:`LOCK_FILE` until :meth:`close` (``train``
        does): a folder another live process holds is refused naming its pid, and
        nothing in it is touched, its temporary files included.
        """
        run = cls(path)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(
                f"cannot create the output folder {run.path}: {exc.strerror}. "
                "Choose a folder you can write to (--out)."
            ) from exc
        if not os.access(run.path, os.W_OK | os.X_OK):
            raise RunDirError(
                f"the output folder {run.path} is not writable. "
                "Choose a folder you can write to (--out)."
            )
        held = FileLock(run.path / LOCK_FILE) if lock else None
        # A lock file there: a run may be going on. Ask first (opening the file changes
        # nothing), so a live run is named as such whatever else is wrong.
        if held is not None and held.path.exists() and not held.acquire():
            raise RunDirError(busy_message(run.path, held))
        try:
            run._check(config, resume)
            if held is not None:
                if not held.acquire():
                    raise RunDirError(busy_message(run.path, held))
                held.mark()
            # Temporary files of a write that a crash interrupted: never read, now removed.
            # Only here, in a folder known to hold this run (or none), and under its lock
            # when locked: in another run's folder they may belong to a process still writing.
            for stale in run.path.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            if not run.config_path.exists():
                atomic_write_json(run.config_path, _json_safe(dict(config)))
            atomic_write_json(run.path / ENV_FILE, env)
        except BaseException:
            if held is not None:
                held.release()
            raise
        run._lock = held
        return run

    def close(self) -> None:
        """Release the folder's lock (if :meth:`open` took it)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check(self, config: Mapping[str, Any], resume: bool) -> None:
        """Refuse a folder that holds another run, or results without their config."""
        run = self
        config = _json_safe(dict(config))
        if run.config_path.exists():
            try:
                existing = json.loads(run.config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise RunDirError(
                    f"{run.config_path} is unreadable ({exc}); this folder holds a damaged run. "
                    "Choose another output folder or delete this one."
                ) from exc
            diff = sorted(
                k
                for k in set(existing) | set(config)
                if k not in WHERE_KEYS and existing.get(k) != config.get(k)
            )
            if diff:
                raise RunDirError(
                    f"{run.path} already holds a different run (differs in: {', '.join(diff)}). "
                    "Choose another output folder, or delete it to start over."
                )
            if not resume and (run.metrics_path.exists() or run.checkpoint_path.exists()):
                raise RunDirError(
                    f"{run.path} already holds this run. Resume it (--resume {run.path}) "
                    "or choose another output folder."
                )
        elif resume:
            raise RunDirError(
                f"nothing to resume in {run.path}: it has no {CONFIG_FILE}. "
                "Check the path, or start a new run there."
            )
        else:
            # Results without the config that made them: never overwrite them.
            orphans = [
                p.name
                for p in (run.metrics_path, run.summary_path, run.checkpoint_path)
                if p.exists()
            ]
            if orphans:
                raise RunDirError(
                    f"{run.path} holds {', '.join(orphans)} but no {CONFIG_FILE}: the files of "
                    "another run, which a new run would overwrite. Choose another output folder."
                )

    # -- metrics
    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite metrics.csv with ``rows`` (small: one row per evaluation)."""
        atomic_write_text(self.metrics_path, format_csv(rows, METRIC_COLUMNS))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.csv, or [] if there is none yet."""
        return read_csv(self.metrics_path) if self.metrics_path.exists() else []

    def write_table(
        self, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
    ) -> Path:
        """Write another CSV of the run (e.g. ``estimates.csv``) atomically."""
        return atomic_write_text(self.path / name, format_csv(rows, columns))

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a JSON file of the run (e.g. ``range_test.json``) atomically."""
        return atomic_write_json(self.path / name, obj)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write summary.json (final metrics and how the run ended)."""
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json as a dict, or None if the run has not ended."""
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text(encoding="utf-8"))

    def read_config(self) -> dict[str, Any]:
        """config.json as a dict."""
        return json.loads(self.config_path.read_text(encoding="utf-8"))
