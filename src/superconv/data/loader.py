"""A device-resident, seeded batch server that counts iterations, not epochs.

The whole data set lives on the device as one uint8 tensor; a batch is an
index gather, then augmentation and normalisation on the device, in batch (no
Python loop over samples). The paper counts iterations (10k for a CLR run,
crossing epoch boundaries freely), so the primary interface is
``loader.batch(iteration)``: a pure function of ``(seed, iteration)``.

- The sample order of epoch ``e`` is a permutation that depends only on
  ``(seed, e)``; resuming at iteration ``i`` needs nothing but ``i``.
- Augmentation draws for iteration ``i`` depend only on ``(seed, i)``.
- With ``world_size > 1`` every rank takes a disjoint slice of the same global
  batch (``batch_size * world_size`` samples), augmented exactly as the
  single-process global batch would be, so sharding never changes the data.

Random draws are made on the CPU with seeded ``torch.Generator`` objects and
moved to the device (a few hundred numbers per batch), so CPU and GPU runs see
identical batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F


def derive_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed that is a pure function of ``(seed, stream, index)``.

    Hashing (rather than ``seed + index``) keeps streams of nearby seeds
    unrelated: seed 0 at epoch 1 must not equal seed 1 at epoch 0.
    """
    digest = hashlib.blake2b(f"superconv:{stream}:{seed}:{index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s share of ``n`` items split ``world_size`` ways.

    Same split as ``torch.tensor_split``: the first ``n % world_size`` ranks
    get one item more.
    """
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def flip_and_crop(
    images: torch.Tensor,
    flips: torch.Tensor | None,
    shifts: torch.Tensor | None,
    pad: int,
) -> torch.Tensor:
    """Mirror, then pad-and-crop, a batch of images ([B, C, H, W], any dtype).

    ``flips``: bool [B], mirror image b left-right where true.
    ``shifts``: int64 [B, 2] of ``(dy, dx)`` in ``0 .. 2 * pad``: the crop of
    the zero-padded image starting at row ``dy``, column ``dx``, so that
    ``out[b, :, i, j] = images[b, :, i + dy - pad, j + dx - pad]`` (0 outside).
    ``dy = dx = pad`` leaves the image unchanged.

    Both happen in one ``torch.gather`` whose column index runs right to left
    for mirrored images: about 5x faster on CPU than ``where`` + advanced
    indexing, and the same code on any device.
    """
    if flips is None and (shifts is None or pad == 0):
        return images
    b, c, h, w = images.shape
    device = images.device
    if shifts is None or pad == 0:
        pad = 0
        shifts = torch.zeros(b, 2, dtype=torch.int64, device=device)
    if pad:
        images = F.pad(images, (pad, pad, pad, pad))  # zeros, as torchvision's RandomCrop
    padded_w = w + 2 * pad
    rows = shifts[:, :1] + torch.arange(h, device=device)  # [B, H] rows of the padded image
    cols = shifts[:, 1:] + torch.arange(w, device=device)  # [B, W]
    if flips is not None:
        # Padding is symmetric, so mirroring the padded image and reading
        # columns wp-1-k equals padding the mirrored one.
        cols = torch.where(flips.view(-1, 1), padded_w - 1 - cols, cols)
    index = (rows[:, :, None] * padded_w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(images.reshape(b, c, -1), 2, index).view(b, c, h, w)


class DeviceLoader:
    """Serve augmented, normalised float batches from a device-resident uint8 set.

    Args:
        images_u8: uint8 [N, C, H, W], moved once to ``device``.
        labels: integer [N].
        batch_size: samples per batch *per rank*.
        mean, std: per-channel statistics on the 0..1 scale; a batch is
            ``(x - mean * 255) / (std * 255)`` for uint8 pixels ``x``.
        train: shuffle and augment (``True``), or serve the set in order
            without augmentation, keeping the last partial batch (``False``).
        flip: mirror half the images left-right (the authors' only augmentation).
        crop_pad: pad-and-random-crop margin in pixels (4 is the common
            choice; 0, the paper's setup, disables it).
        seed: the batches are a pure function of ``(seed, iteration)``.
        device, dtype, channels_last: where and how batches are returned.
        drop_last: training only; drop each epoch's incomplete last global batch.
        rank, world_size: data parallelism; each rank gets a disjoint part of
            the same global batch.

    ``len(loader)`` is the number of batches per epoch. ``loader.batch(i)``
    returns the batch of global iteration ``i``; ``iter(loader)`` yields, in
    training mode, the batches from :attr:`iteration` to the end of its epoch
    (advancing it; see :meth:`state_dict`), in eval mode one full ordered pass.

    Example::

        loader = DeviceLoader(ds.train_x, ds.train_y, 128, mean=ds.mean, std=ds.std)
        for step in range(10_000):          # crosses epoch boundaries freely
            x, y = loader.batch(step)
    """

    def __init__(
        self,
        images_u8: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = True,
        flip: bool = True,
        crop_pad: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = True,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
    ):
        if images_u8.dtype != torch.uint8 or images_u8.dim() != 4:
            raise ValueError(
                f"DeviceLoader: images must be uint8 [N, C, H, W], got "
                f"{images_u8.dtype} {list(images_u8.shape)}"
            )
        if labels.dim() != 1 or len(labels) != len(images_u8):
            raise ValueError(
                f"DeviceLoader: {len(images_u8):,} images but labels of shape "
                f"{list(labels.shape)}; need one label per image"
            )
        channels = images_u8.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"DeviceLoader: images have {channels} channels but mean has {len(mean)} "
                f"and std {len(std)} values; give one per channel (0..1 scale)"
            )
        if min(std) <= 0:
            raise ValueError(f"DeviceLoader: std must be positive, got {tuple(std)}")
        if batch_size < 1:
            raise ValueError(f"DeviceLoader: batch_size must be >= 1, got {batch_size}")
        if crop_pad < 0:
            raise ValueError(f"DeviceLoader: crop_pad must be >= 0, got {crop_pad}")
        if not 0 <= rank < world_size:
            raise ValueError(f"DeviceLoader: need 0 <= rank < world_size, got {rank}, {world_size}")
        global_batch = batch_size * world_size
        if train and drop_last and len(images_u8) < global_batch:
            raise ValueError(
                f"DeviceLoader: {len(images_u8):,} samples make no full batch of "
                f"{batch_size:,} x {world_size} ranks; use a smaller batch or drop_last=False"
            )
        self.device = torch.device(device)
        self.images = images_u8.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.flip = flip
        self.crop_pad = crop_pad
        self.seed = seed
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.dtype = dtype
        self.rank = rank
        self.world_size = world_size
        self.iteration = 0  # the next training iteration iter() serves
        # (x - 255 mean) * 1 / (255 std): one subtract and one multiply in place.
        scale = torch.tensor([255.0 * s for s in std], dtype=torch.float32)
        self._shift = (torch.tensor(mean, dtype=torch.float32) * 255.0).view(1, -1, 1, 1)
        self._inv_scale = (1.0 / scale).view(1, -1, 1, 1)
        self._shift = self._shift.to(self.device)
        self._inv_scale = self._inv_scale.to(self.device)
        self._epoch_order: tuple[int, torch.Tensor] | None = None  # memo of the last permutation

    @property
    def num_samples(self) -> int:
        """Samples in the whole data set (all ranks)."""
        return len(self.images)

    def __len__(self) -> int:
        """Batches per epoch (for this rank)."""
        if not self.train:
            start, stop = shard_bounds(self.num_samples, self.world_size, self.rank)
            return -(-(stop - start) // self.batch_size)
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The global sample order of training epoch ``epoch`` (a function of seed, epoch)."""
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            order = torch.randperm(self.num_samples, generator=generator).to(self.device)
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def batch_indices(self, iteration: int) -> torch.Tensor:
        """Sample indices of this rank's batch at global ``iteration``."""
        return self._locate(iteration)[0]

    def _locate(self, iteration: int) -> tuple[torch.Tensor, int, int, int]:
        """(this rank's indices, global batch size, start, stop within the global batch)."""
        if iteration < 0:
            raise ValueError(f"DeviceLoader: iteration must be >= 0, got {iteration}")
        per_epoch = len(self)
        if per_epoch == 0:
            raise ValueError(f"DeviceLoader: rank {self.rank} has no samples to serve")
        epoch, position = divmod(iteration, per_epoch)
        if not self.train:
            start, stop = shard_bounds(self.num_samples, self.world_size, self.rank)
            first = start + position * self.batch_size
            last = min(first + self.batch_size, stop)
            indices = torch.arange(first, last, device=self.device)
            return indices, len(indices), 0, len(indices)
        global_batch = self.batch_size * self.world_size
        members = self.permutation(epoch)[position * global_batch : (position + 1) * global_batch]
        start, stop = shard_bounds(len(members), self.world_size, self.rank)
        return members[start:stop], len(members), start, stop

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` for global ``iteration``: a pure function of ``(seed, iteration)``.

        Training mode: epoch ``iteration // len(self)``, shuffled and augmented.
        Eval mode: the ordered batch ``iteration % len(self)``, unaugmented.
        """
        indices, global_size, start, stop = self._locate(iteration)
        images = self.images.index_select(0, indices)  # far faster than images[indices] on CPU
        if self.train and (self.flip or self.crop_pad):
            # Draws cover the whole global batch so each rank's slice matches
            # what one process serving the global batch would produce.
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "augment", iteration))
            flips = torch.rand(global_size, generator=generator) < 0.5 if self.flip else None
            shifts = None
            if self.crop_pad:
                shifts = torch.randint(
                    0, 2 * self.crop_pad + 1, (global_size, 2), generator=generator
                )
            images = flip_and_crop(
                images,
                None if flips is None else flips[start:stop].to(self.device),
                None if shifts is None else shifts[start:stop].to(self.device),
                self.crop_pad,
            )
        return self.normalise(images), self.labels.index_select(0, indices)

    def normalise(self, images_u8: torch.Tensor) -> torch.Tensor:
        """``(x - mean * 255) * (1 / (std * 255))`` as float32, then ``dtype``/layout."""
        x = images_u8.to(torch.float32).sub_(self._shift).mul_(self._inv_scale)
        if self.dtype != torch.float32:
            x = x.to(self.dtype)  # compute in float32: bf16 would round the mean
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Eval mode: one ordered pass. Training: the rest of the current epoch."""
        if not self.train:
            for i in range(len(self)):
                yield self.batch(i)
            return
        end_of_epoch = (self.iteration // len(self) + 1) * len(self)
        while self.iteration < end_of_epoch:
            batch = self.batch(self.iteration)
            self.iteration += 1
            yield batch

    def state_dict(self) -> dict:
        """The resumable position (the next iteration) and the settings it depends on."""
        return {
            "iteration": self.iteration,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_samples": self.num_samples,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state["iteration"]``; the settings must match this loader's."""
        mine = self.state_dict()
        differing = [k for k in mine if k != "iteration" and state.get(k) != mine[k]]
        if differing:
            details = ", ".join(f"{k}: saved {state.get(k)!r}, now {mine[k]!r}" for k in differing)
            raise ValueError(
                f"DeviceLoader.load_state_dict: the saved position belongs to a different "
                f"loader ({details}); resuming would serve different batches"
            )
        self.iteration = int(state["iteration"])
