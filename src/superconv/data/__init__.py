"""Data sets for the paper's experiments: find them, read them, check them.

``load_dataset(name)`` returns a :class:`Dataset` of uint8 image tensors and
int64 labels, plus the per-channel mean/std of the training images. Names:
``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist`` and ``mnist-demo`` (a
class-balanced MNIST subset shipped inside the package, so the demo runs with
no data folder). Nothing is downloaded here.

Where data lives (:func:`locate_data_dir`): the ``data_dir`` argument, else the
``SUPERCONV_DATA`` environment variable, else the per-user cache folder
(``$XDG_CACHE_HOME/superconv/data``, default ``~/.cache/superconv/data``),
holding the official folders ``cifar-10-batches-bin/``, ``cifar-10-batches-py/``,
``cifar-100-binary/``, ``cifar-100-python/``, ``mnist/``, ``fashion-mnist/``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch

from ..errors import did_you_mean
from .formats import (
    CifarBatch,
    DataError,
    known_sha256,
    read_cifar_binary,
    read_cifar_python,
    read_idx_split,
)
from .loader import DeviceLoader
from .subsets import balanced_subset, train_val_split

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "DeviceLoader",
    "balanced_subset",
    "channel_stats",
    "load_dataset",
    "locate_data_dir",
    "train_val_split",
]

ENV_VAR = "SUPERCONV_DATA"

# Where Debian's `dataset-fashion-mnist` package may put the files (it was not
# installed where this was written, so the exact path is unverified; each
# folder is also searched in the upstream repository's `data/fashion/`).
DEBIAN_FASHION_MNIST_DIRS = (
    "/usr/share/dataset-fashion-mnist",
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/fashion-mnist",
)

_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)  # the official fine label order (alphabetical)
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is and where its files go under the data folder."""

    name: str
    classes: tuple[str, ...]
    folders: tuple[str, ...]  # searched in this order (CIFAR: binary version first)
    train_size: int
    test_size: int


DATASETS = MappingProxyType(
    {
        "cifar10": DatasetInfo(
            "cifar10",
            _CIFAR10_CLASSES,
            ("cifar-10-batches-bin", "cifar-10-batches-py"),
            50_000,
            10_000,
        ),
        "cifar100": DatasetInfo(
            "cifar100", _CIFAR100_CLASSES, ("cifar-100-binary", "cifar-100-python"), 50_000, 10_000
        ),
        "mnist": DatasetInfo("mnist", _DIGITS, ("mnist",), 60_000, 10_000),
        "fashion-mnist": DatasetInfo(
            "fashion-mnist", _FASHION_CLASSES, ("fashion-mnist",), 60_000, 10_000
        ),
        # Shipped in superconv/assets; made by tools/make_demo_data.py.
        "mnist-demo": DatasetInfo("mnist-demo", _DIGITS, (), 10_000, 2_000),
    }
)


@dataclass(frozen=True)
class _CifarLayout:
    """One official distribution of a CIFAR set: a folder and its files."""

    folder: str
    reader: Callable[..., CifarBatch]
    train: tuple[tuple[str, int], ...]  # (file name, rows)
    test: tuple[tuple[str, int], ...]

    @property
    def files(self) -> tuple[tuple[str, int], ...]:
        return self.train + self.test


def _cifar_layouts(name: str) -> tuple[_CifarLayout, ...]:
    """The binary version first (preferred: plain bytes, no unpickling), then python."""
    if name == "cifar10":
        batches = tuple((f"data_batch_{i}", 10_000) for i in range(1, 6))
        return (
            _CifarLayout(
                "cifar-10-batches-bin",
                read_cifar_binary,
                tuple((f + ".bin", r) for f, r in batches),
                (("test_batch.bin", 10_000),),
            ),
            _CifarLayout(
                "cifar-10-batches-py", read_cifar_python, batches, (("test_batch", 10_000),)
            ),
        )
    return (
        _CifarLayout(
            "cifar-100-binary", read_cifar_binary, (("train.bin", 50_000),), (("test.bin", 10_000),)
        ),
        _CifarLayout(
            "cifar-100-python", read_cifar_python, (("train", 50_000),), (("test", 10_000),)
        ),
    )


# (images, labels) IDX base names of the training and test splits; each file
# may be gzipped (name + ".gz", preferred) or raw.
_IDX_SPLITS = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set in memory: uint8 images [N, C, H, W], int64 labels [N].

    ``mean`` and ``std`` are per channel on the 0..1 scale, computed from the
    training images; :class:`DeviceLoader` normalises with them.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"Dataset {self.name}: {split}_x must be uint8 [N, C, H, W]")
            if y.dtype != torch.int64 or y.shape != (len(x),):
                raise ValueError(
                    f"Dataset {self.name}: {split}_y must be int64 [{len(x)}], got "
                    f"{y.dtype} {list(y.shape)}"
                )
        channels = self.train_x.shape[1]
        if self.test_x.shape[1:] != self.train_x.shape[1:]:
            raise ValueError(f"Dataset {self.name}: train and test images differ in shape")
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"Dataset {self.name}: need one mean and std per channel")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    def subset(self, train_indices: torch.Tensor, *, name: str | None = None) -> Dataset:
        """The same data set with only ``train_indices`` of the training images.

        The test set and ``mean``/``std`` stay those of the full set, so runs on
        subsets (Table 1's 40k..10k rows) differ only in the training images.
        """
        idx = torch.as_tensor(train_indices, dtype=torch.int64)
        return dataclasses.replace(
            self,
            name=name or f"{self.name}-subset{len(idx)}",
            train_x=self.train_x[idx],
            train_y=self.train_y[idx],
        )

    def holdout(self, n_val: int, seed: int = 0) -> Dataset:
        """A tuning split: train on the rest, evaluate on ``n_val`` held-out training images.

        The returned ``test_x``/``test_y`` are the class-balanced validation
        images (see :func:`train_val_split`); the real test set is not used,
        so tuning on it never sees test images.
        """
        train_idx, val_idx = train_val_split(self.train_y, n_val, seed)
        return dataclasses.replace(
            self,
            name=f"{self.name}-holdout{n_val}-seed{seed}",
            train_x=self.train_x[train_idx],
            train_y=self.train_y[train_idx],
            test_x=self.train_x[val_idx],
            test_y=self.train_y[val_idx],
        )

    def loader(self, split: Literal["train", "test"], batch_size: int, **kwargs) -> DeviceLoader:
        """A :class:`DeviceLoader` over one split with this set's mean/std.

        ``train`` defaults to ``True`` for the training split and ``False``
        (ordered, unaugmented) for the test split.
        """
        if split not in ("train", "test"):
            raise ValueError(f"Dataset.loader: split must be 'train' or 'test', got {split!r}")
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        kwargs.setdefault("train", split == "train")
        return DeviceLoader(x, y, batch_size, mean=self.mean, std=self.std, **kwargs)


def channel_stats(images_u8: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, on the 0..1 scale.

    Exact in float64 via a 256-bin histogram per channel, which avoids a
    float64 copy of the whole set (1.2 GB for CIFAR-10).
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(images_u8.shape[1]):
        counts = torch.bincount(images_u8[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * (values - mean) ** 2).sum() / n
        means.append(float(mean) / 255.0)
        stds.append(float(var.sqrt()) / 255.0)
    return tuple(means), tuple(stds)


def default_cache_dir() -> Path:
    """The per-user data folder: ``$XDG_CACHE_HOME/superconv/data`` or ``~/.cache/...``."""
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "superconv" / "data"


def locate_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir``, else ``$SUPERCONV_DATA``, else :func:`default_cache_dir`.

    The folder need not exist; :func:`load_dataset` says what is missing.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def _how_to_get(name: str) -> str:
    return (
        f"Get it with `superconv data fetch {name}`, or point --data-dir / {ENV_VAR} "
        "at a folder that holds it."
    )


def _not_found(name: str, root: Path, expected: str) -> DataError:
    if root.exists() and not root.is_dir():
        return DataError(
            f"{name} was not found: the data folder {root} is a file, not a folder. Point "
            f"--data-dir (or {ENV_VAR}) at the folder that holds the data sets."
        )
    where = f"{root}" + ("" if root.is_dir() else " (the folder does not exist)")
    return DataError(f"{name} was not found in {where}. Expected {expected}. {_how_to_get(name)}")


def _load_cifar(name: str, root: Path, verify: bool):
    layouts = _cifar_layouts(name)
    chosen = None
    for layout in layouts:
        if all((root / layout.folder / f).is_file() for f, _ in layout.files):
            chosen = layout
            break
    if chosen is None:
        for layout in layouts:  # a started but incomplete copy deserves a precise message
            folder = root / layout.folder
            if folder.is_dir():
                missing = [f for f, _ in layout.files if not (folder / f).is_file()]
                raise DataError(
                    f"{folder} is incomplete: missing {', '.join(missing)}. {_how_to_get(name)}"
                )
        expected = " or ".join(
            f"{layout.folder}/ with {', '.join(f for f, _ in layout.files)}" for layout in layouts
        )
        raise _not_found(name, root, expected)

    def read(files):
        parts = [
            chosen.reader(
                root / chosen.folder / f,
                kind=name,
                rows=rows,
                sha256=known_sha256(name, f) if verify else None,
            )
            for f, rows in files
        ]
        images = np.concatenate([p.images for p in parts]) if len(parts) > 1 else parts[0].images
        labels = np.concatenate([p.labels for p in parts])
        return torch.from_numpy(images), torch.from_numpy(labels)

    return read(chosen.train), read(chosen.test)


def _find_idx(folder: Path, base: str) -> Path | None:
    for candidate in (folder / f"{base}.gz", folder / base):
        if candidate.is_file():
            return candidate
    return None


def _idx_folder(name: str, root: Path) -> Path:
    """The folder holding ``name``'s IDX files, or a DataError naming what is missing."""
    folders = [root / f for f in DATASETS[name].folders]
    if name == "fashion-mnist":
        folders += [
            Path(d) / sub for d in DEBIAN_FASHION_MNIST_DIRS for sub in ("", "data/fashion")
        ]
    bases = [b for split in _IDX_SPLITS for b in split]
    for folder in folders:
        if all(_find_idx(folder, b) for b in bases):
            return folder
    primary = folders[0]
    if primary.is_dir():
        missing = [b for b in bases if not _find_idx(primary, b)]
        raise DataError(
            f"{primary} is incomplete: missing {', '.join(m + '[.gz]' for m in missing)}. "
            f"{_how_to_get(name)}"
        )
    expected = f"{DATASETS[name].folders[0]}/ with {', '.join(b + '.gz' for b in bases)}"
    if name == "fashion-mnist":
        expected += f" (also searched: {', '.join(DEBIAN_FASHION_MNIST_DIRS)})"
    raise _not_found(name, root, expected)


def _load_idx(name: str, paths: list[tuple[Path, Path]], verify: bool):
    info = DATASETS[name]
    splits = []
    for (images_path, labels_path), (images_base, labels_base), count in zip(
        paths, _IDX_SPLITS, (info.train_size, info.test_size)
    ):
        images, labels = read_idx_split(
            images_path,
            labels_path,
            num_classes=len(info.classes),
            count=count,
            images_sha256=known_sha256(name, images_base) if verify else None,
            labels_sha256=known_sha256(name, labels_base) if verify else None,
            dataset=name,
        )
        splits.append((torch.from_numpy(images), torch.from_numpy(labels)))
    return splits


def _demo_paths() -> list[tuple[Path, Path]]:
    # Plain files when installed from a wheel or source tree; the package
    # data lives flat in assets/ (package-data "assets/*").
    assets = Path(str(resources.files("superconv").joinpath("assets")))
    return [
        (assets / f"mnist-demo-{i}.gz", assets / f"mnist-demo-{lab}.gz") for i, lab in _IDX_SPLITS
    ]


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, verify: bool = True
) -> Dataset:
    """Load a data set by name from the data folder (no network).

    ``verify`` checks each file's sha256 against the official one where it
    is known (CIFAR-10 binary, MNIST, the demo subset); sizes, magic numbers,
    label ranges and counts are always checked. For CIFAR the binary version
    is preferred when both versions are present. Example::

        >>> ds = load_dataset("mnist-demo")
        >>> ds.train_x.shape, ds.num_classes
        (torch.Size([10000, 1, 28, 28]), 10)
    """
    if name not in DATASETS:
        hint = did_you_mean(name, DATASETS, cutoff=0.5)
        raise DataError(f"unknown data set {name!r}{hint} Known: {', '.join(DATASETS)}.")
    info = DATASETS[name]
    if name in ("cifar10", "cifar100"):
        train, test = _load_cifar(name, locate_data_dir(data_dir), verify)
    elif name == "mnist-demo":
        train, test = _load_idx(name, _demo_paths(), verify)
    else:
        folder = _idx_folder(name, locate_data_dir(data_dir))
        paths = [(_find_idx(folder, i), _find_idx(folder, lab)) for i, lab in _IDX_SPLITS]
        train, test = _load_idx(name, paths, verify)
    mean, std = channel_stats(train[0])
    return Dataset(name, train[0], train[1], test[0], test[1], info.classes, mean, std)
