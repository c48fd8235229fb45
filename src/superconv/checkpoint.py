"""Atomic checkpoints of everything a resumed run needs, loaded with ``weights_only=True``.

A checkpoint holds the model and optimizer state, the policy step reached, the
RNG states, the observers' state, the metrics rows so far and the elapsed
training time. The data order needs no state of its own: the loader's batch for
iteration ``t`` is a pure function of (seed, t), so the step is the position.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from superconv.errors import CheckpointError
from superconv.records import WHERE_KEYS, atomic_write_bytes

FORMAT_VERSION = 1


def save(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (serialise in memory, temp file, rename)."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def discard(path: str | os.PathLike) -> None:
    """Remove a scratch file written by :func:`save` (the range test's disk copy); gone is fine."""
    Path(path).unlink(missing_ok=True)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save`, refusing anything but plain tensors and data.

    Raises :class:`CheckpointError` naming the file for a missing, truncated,
    corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}. A run writes checkpoint.pt into its run folder every "
            "--checkpoint-every iterations; check the path you passed to --resume."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}.") from exc
    except (
        RuntimeError,
        EOFError,
        OSError,  # a truncated zip can fail in a seek: "[Errno 22] Invalid argument"
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        # the weights-only unpickler on damaged bytes (found by tests/test_fuzz.py):
        # "pop from empty list", a bad memo key, a wrong argument type...
        IndexError,
        KeyError,
        TypeError,
        AttributeError,
        UnicodeDecodeError,
        OverflowError,
        struct.error,
    ) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {_first_sentence(exc)}). "
            "It is truncated, corrupt or was not written by superconv; start the run again "
            "in a new folder."
        ) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not a superconv checkpoint (format version "
            f"{state.get('format_version') if isinstance(state, dict) else None!r}, "
            f"expected {FORMAT_VERSION})."
        )
    return state


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an error's text (torch's zip errors run on for lines)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text.split(". ")[0].rstrip(".")[:200]


def check_model_state(path: str | os.PathLike, model: torch.nn.Module, state_dict: dict) -> None:
    """Refuse a checkpoint whose weights do not fit ``model`` (another architecture)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    shapes = sorted(
        k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or extra or shapes:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes))
            if keys
        )
        raise CheckpointError(
            f"{path} holds the weights of a different model ({detail}). "
            "Resume with the same --model and options as the run that wrote it."
        )


def check_config(path: str | os.PathLike, state: dict, config: dict) -> None:
    """Refuse a checkpoint written by a run of another configuration (another seed, say).

    ``config`` is the resuming run's ``TrainConfig.to_dict()``; the checkpoint
    holds the one of the run that wrote it. Same-shaped weights from another
    run would otherwise resume silently into a run that never happened.
    """
    recorded = state.get("config")
    if not isinstance(recorded, dict):
        return  # written before checkpoints recorded their config

    def plain(value: Any) -> Any:  # tuples and lists are the same JSON
        return json.loads(json.dumps(value))

    recorded, config = plain(recorded), plain(config)
    differ = sorted(  # where a run reads its data and runs (WHERE_KEYS) is not what it is
        k
        for k in set(recorded) | set(config)
        if k not in WHERE_KEYS and recorded.get(k) != config.get(k)
    )
    if differ:
        raise CheckpointError(
            f"{path} was written by a different run (differs in: {', '.join(differ)}). "
            "Resume a run only from its own checkpoint.pt."
        )
