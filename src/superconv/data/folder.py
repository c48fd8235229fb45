"""Your own images: a folder of class subfolders of JPEG/PNG files, streamed.

``root/<class>/<image>.{jpg,jpeg,png}`` (ImageNet's ``train/`` and ``val/`` after
the usual ``valprep`` sorting have this layout). :func:`scan_folder` lists the
classes (sorted names, label = position) and the images; nothing is loaded.
:class:`FolderLoader` decodes batches with Pillow in ``DataLoader`` worker
processes, resizes and crops them to ``image_size`` and returns normalised
float batches, like :class:`~superconv.data.loader.DeviceLoader`: ``batch(step)``
is a pure function of ``(seed, step)`` (resume = ask for the saved step), and
``iter(loader)`` in eval mode is one ordered pass.

Augmentation (the ImageNet practice of He et al. 2016 / Goyal et al. 2017, as
torchvision's ``RandomResizedCrop`` + flip): training crops a random area of
8%..100% of the image with aspect ratio 3/4..4/3, resized to
``image_size``, mirrored half the time; evaluation resizes the shorter side to
``image_size / 0.875`` (256 for 224) and takes the centre crop.

Unreadable images: :func:`scan_folder` opens every file's header (``check=True``)
and skips the ones Pillow cannot identify, with one warning that names them and
gives their count. A file that fails only when decoded (truncated data) is
replaced, in that batch, by the next image of the folder, with a warning naming it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .formats import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# ImageNet's per-channel statistics on the 0..1 scale (the usual normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # 224 of 256
_SCALE = (0.08, 1.0)  # RandomResizedCrop's area range
_RATIO = (3 / 4, 4 / 3)  # and its aspect-ratio range
_UNREADABLE = (OSError, ValueError, SyntaxError)  # what Pillow raises on bad files


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError(
            "image folders need Pillow: pip install 'superconv[images]' (or pip install pillow)"
        ) from exc
    return Image


@dataclass(frozen=True)
class ImageFolder:
    """What :func:`scan_folder` found: class names, ``(path, label)`` pairs, skipped files."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)


def scan_folder(root: str | os.PathLike, *, check: bool = True) -> ImageFolder:
    """List ``root``'s class subfolders and their JPEG/PNG images (sorted, so labels are stable).

    ``check``: open each image's header with Pillow and skip (with one warning
    naming them and giving the count) the files it cannot read. Hidden entries
    and files of other types are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        why = "it does not exist" if not root.exists() else "it is not a folder"
        raise DataError(f"image folder {root} cannot be used: {why}")
    classes = tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )
    if not classes:
        raise DataError(f"{root} has no class subfolders: expected {root}/<class>/<image>.jpg|.png")
    found: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS) and not filename.startswith("."):
                    found.append((os.path.join(dirpath, filename), label))
    skipped: list[tuple[str, str]] = []
    if check:
        Image = _pil()
        readable = []
        for path, label in found:
            try:
                with Image.open(path) as image:
                    image.verify()
            except _UNREADABLE as exc:
                skipped.append((path, f"{type(exc).__name__}: {exc}"))
            else:
                readable.append((path, label))
        found = readable
    if skipped:
        shown = "; ".join(f"{path} ({why})" for path, why in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s) in {root}: {shown}{more}",
            stacklevel=2,
        )
    if not found:
        raise DataError(f"{root} holds no readable .jpg/.jpeg/.png images in {', '.join(classes)}")
    return ImageFolder(root, classes, tuple(found), tuple(skipped))


# ----------------------------------------------------------------------------- transforms
def _random_resized_box(width: int, height: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params``: (left, top, w, h); 10 tries, then centre."""
    area = width * height
    log_ratio = (math.log(_RATIO[0]), math.log(_RATIO[1]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*_SCALE, generator=g).item()
        ratio = math.exp(torch.empty(1).uniform_(*log_ratio, generator=g).item())
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=g).item())
            return left, top, w, h
    ratio = width / height  # fallback: the whole image, clamped to the ratio range
    if ratio < _RATIO[0]:
        w, h = width, int(round(width / _RATIO[0]))
    elif ratio > _RATIO[1]:
        h, w = height, int(round(height * _RATIO[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _to_uint8(image: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def decode(path: str, image_size: int, train: bool, seed: int | None) -> torch.Tensor:
    """One image as uint8 ``[3, image_size, image_size]`` (see the module docstring)."""
    Image = _pil()
    with Image.open(path) as image:
        image = image.convert("RGB")
    bilinear = Image.Resampling.BILINEAR
    if train:
        g = torch.Generator().manual_seed(int(seed or 0))
        left, top, w, h = _random_resized_box(image.width, image.height, g)
        image = image.resize((image_size, image_size), bilinear, box=(left, top, left + w, top + h))
        if torch.rand(1, generator=g).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _to_uint8(image)
    short = int(round(image_size / EVAL_CROP_FRACTION))
    scale = short / min(image.width, image.height)
    size = (
        max(image_size, round(image.width * scale)),
        max(image_size, round(image.height * scale)),
    )
    image = image.resize(size, bilinear)
    left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
    return _to_uint8(image.crop((left, top, left + image_size, top + image_size)))


class _Decoded(torch.utils.data.Dataset):
    """Map-style dataset over ``(index, augmentation seed)`` keys (what the worker decodes)."""

    def __init__(self, folder: ImageFolder, image_size: int, train: bool):
        self.folder, self.image_size, self.train = folder, image_size, train
        self.replaced = 0

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        samples = self.folder.samples
        for attempt in range(len(samples)):
            path, label = samples[(index + attempt) % len(samples)]
            try:
                return decode(path, self.image_size, self.train, seed), label
            except _UNREADABLE as exc:
                self.replaced += 1
                warnings.warn(
                    f"{path}: cannot decode ({type(exc).__name__}: {exc}); used the next image "
                    f"instead ({self.replaced} replaced in this worker)",
                    stacklevel=2,
                )
        raise DataError(f"no image of {self.folder.root} could be decoded")


def _stack(items: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class FolderLoader:
    """Stream normalised float batches of an :class:`ImageFolder` through DataLoader workers.

    Args:
        folder: from :func:`scan_folder`.
        batch_size: images per batch.
        image_size: side of the square crops (224 for ImageNet).
        train: shuffle (a permutation per epoch) and augment; else one ordered
            pass of centre crops, keeping the last partial batch.
        seed: batches and augmentations are a pure function of ``(seed, step)``.
        workers: DataLoader worker processes decoding images (0: in this process).
        mean, std: per-channel statistics on the 0..1 scale (default ImageNet's).
        device, channels_last: where and how batches are returned.

    ``len(loader)`` is the number of batches per epoch (training drops the last
    incomplete one).
    """

    def __init__(
        self,
        folder: ImageFolder,
        batch_size: int,
        *,
        image_size: int = 224,
        train: bool = True,
        seed: int = 0,
        workers: int = 4,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("image_size", image_size, 8),
                                 ("workers", workers, 0)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"{name} must be an integer >= {low}, got {value!r}")
        if train and batch_size > len(folder):
            raise DataError(
                f"batch_size ({batch_size}) is larger than the image folder ({len(folder)} "
                "images); use a smaller batch"
            )
        self.folder, self.batch_size, self.train, self.seed = folder, batch_size, train, seed
        self.image_size = image_size
        self.workers = workers
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.dataset = _Decoded(folder, image_size, train)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self._stream: Iterator | None = None
        self._next: tuple[int, int] | None = None  # (epoch, batch) the stream yields next

    def __len__(self) -> int:
        n = len(self.folder)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _keys(self, epoch: int, start: int) -> list[list[tuple[int, int]]]:
        """The batches of ``epoch`` from batch ``start`` on, as (index, augmentation seed) keys."""
        n = len(self.folder)
        if not self.train:
            order = list(range(n))
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g).tolist()
        batches = []
        for b in range(start, len(self)):
            chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
            # a distinct augmentation seed per (seed, epoch, position): the same at any worker count
            base = (self.seed * 1_000_003 + epoch) * 1_000_003 + b * self.batch_size
            batches.append([(index, base + i) for i, index in enumerate(chunk)])
        return batches

    def _open(self, epoch: int, start: int) -> Iterator:
        return iter(
            torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=self._keys(epoch, start),
                num_workers=self.workers,
                collate_fn=_stack,
                pin_memory=self.device.type == "cuda",
            )
        )

    def _finish(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.to(self.device, non_blocking=True).float()
        x = ((x - self.mean.to(self.device)) / self.std.to(self.device)).contiguous(
            memory_format=self.memory_format
        )
        return x, labels.to(self.device, non_blocking=True)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of global iteration ``step`` (crossing epochs freely)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise DataError(f"step must be an integer >= 0, got {step!r}")
        where = divmod(step, len(self))
        if self._stream is None or self._next != where:
            self._stream = self._open(*where)  # a new epoch, or a jump (resume)
        images, labels = next(self._stream)
        epoch, b = where
        self._next = (epoch, b + 1) if b + 1 < len(self) else None
        return self._finish(images, labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Eval mode: one ordered pass of centre crops; training mode: one epoch (epoch 0)."""
        for images, labels in self._open(0, 0):
            yield self._finish(images, labels)


# ----------------------------------------------------------------------------- data set names
FOLDER_PREFIX = "folder:"  # --dataset folder:PATH
TEST_SUBFOLDERS = ("val", "test")  # ImageNet's layout: PATH/train and PATH/val


def folder_path(dataset: str) -> Path | None:
    """``PATH`` of a ``folder:PATH`` data set name; ``None`` for the built-in names."""
    if not dataset.startswith(FOLDER_PREFIX):
        return None
    path = dataset[len(FOLDER_PREFIX) :]
    if not path:
        raise DataError("--dataset folder:PATH needs the folder: e.g. folder:/data/my-images")
    return Path(path).expanduser()


def folder_splits(dataset: str, *, check: bool = True) -> tuple[ImageFolder, ImageFolder | None]:
    """The training and test :class:`ImageFolder` of a ``folder:PATH`` data set.

    ``PATH/train`` (with ``PATH/val`` or ``PATH/test`` as the test set, ImageNet's
    layout) or, without a ``train`` subfolder, ``PATH`` itself as the training set
    and no test set (hold out a validation split with ``val_size``). The test set
    must have the training set's classes.
    """
    root = folder_path(dataset)
    if root is None:
        raise DataError(f"{dataset!r} is not a folder:PATH data set")
    if not (root / "train").is_dir():
        return scan_folder(root, check=check), None
    train = scan_folder(root / "train", check=check)
    for name in TEST_SUBFOLDERS:
        if (root / name).is_dir():
            test = scan_folder(root / name, check=check)
            if test.classes != train.classes:
                raise DataError(
                    f"{root / name} and {root / 'train'} hold different classes "
                    f"({len(test.classes)} and {len(train.classes)} subfolders); the test set "
                    "must have the training set's classes"
                )
            return train, test
    return train, None


def subset(folder: ImageFolder, indices: Sequence[int]) -> ImageFolder:
    """``folder`` with only the images at ``indices`` (classes unchanged)."""
    return ImageFolder(folder.root, folder.classes, tuple(folder.samples[i] for i in indices))
