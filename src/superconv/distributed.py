"""PyTorch's own DDP under ``torchrun``: process-group set-up and the few collectives we need.

Nothing here is a training engine: :func:`superconv.train.train` wraps the model
in :class:`torch.nn.parallel.DistributedDataParallel` and uses these helpers to
reduce metrics and to let rank 0 alone write files.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them. Without them
(a plain ``python`` or ``superconv`` call) everything is a world of one and no
process group is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from superconv.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> World:
    """The world described by torchrun's environment variables (a world of one without them)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise UserError(
            f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({exc}); launch with torchrun."
        ) from exc
    if world_size < 1 or not (0 <= rank < world_size):
        raise UserError(f"invalid torchrun world: RANK={rank}, WORLD_SIZE={world_size}.")
    return World(rank, world_size, local_rank)


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes; returns the world and this rank's device.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` and the NCCL backend; on the CPU
    the gloo backend. Calling it again in a process that already joined is a no-op.
    """
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """All-reduce ``tensor`` in place (sum, max or min) when a process group exists; returns it."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[
            op
        ]
        dist.all_reduce(tensor, op=reduce_op)
    return tensor


def mean_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The average of ``tensor`` over ranks (a new tensor; ``tensor`` itself without a group)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def average_buffers_(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) across ranks, in place.

    With per-rank (unsynchronised) BN every rank keeps its own running
    statistics; their average equals ghost BN's average over chunks, because the
    moving averages are linear in the batch statistics. Integer buffers (batch
    counters) are left as they are.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    world = dist.get_world_size()
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
