"""Tests for superconv.data: readers, locating, subsets and the device loader.

Readers are tested on small files written here (byte layouts built by hand
from the format specs, not by our encoder); real-data tests use the
``data_dir`` fixture and skip without SUPERCONV_DATA.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import superconv.data as data_mod
from superconv.data import (
    DataError,
    Dataset,
    DeviceLoader,
    balanced_subset,
    channel_stats,
    load_dataset,
    locate_data_dir,
    train_val_split,
)
from superconv.data.formats import (
    encode_idx,
    known_sha256,
    read_cifar_binary,
    read_cifar_python,
    read_idx,
    read_idx_split,
)
from superconv.data.loader import flip_and_crop, shard_bounds

# ---------------------------------------------------------------- helpers


def cifar_rows(n: int, kind: str = "cifar10", seed: int = 0):
    """Random CIFAR rows: (bytes of the binary version, images [n,3,32,32], fine, coarse)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    fine = rng.integers(0, 10 if kind == "cifar10" else 100, n).astype(np.uint8)
    coarse = rng.integers(0, 20, n).astype(np.uint8)
    rows = []
    for i in range(n):  # the spec, row by row: label byte(s), then R, G, B planes
        labels = bytes([fine[i]]) if kind == "cifar10" else bytes([coarse[i], fine[i]])
        rows.append(
            labels + images[i, 0].tobytes() + images[i, 1].tobytes() + images[i, 2].tobytes()
        )
    return b"".join(rows), images, fine.astype(np.int64), coarse.astype(np.int64)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX by the spec: 0, 0, type 0x08, ndim, big-endian uint32 sizes, data."""
    return (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def write_mnist_pair(folder: Path, n: int = 6, *, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pack = gzip.compress if compress else (lambda b: b)
    suffix = ".gz" if compress else ""
    ip = write(folder / f"train-images-idx3-ubyte{suffix}", pack(idx_bytes(images)))
    lp = write(folder / f"train-labels-idx1-ubyte{suffix}", pack(idx_bytes(labels)))
    return ip, lp, images, labels


# ---------------------------------------------------------------- CIFAR binary


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_binary_reads_rows_by_the_spec(tmp_path, kind):
    content, images, fine, coarse = cifar_rows(3, kind)
    path = write(tmp_path / "batch.bin", content)
    batch = read_cifar_binary(path, kind=kind, rows=3)
    assert batch.images.dtype == np.uint8 and batch.images.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(batch.images, images)
    np.testing.assert_array_equal(batch.labels, fine)
    if kind == "cifar100":
        np.testing.assert_array_equal(batch.coarse_labels, coarse)
    else:
        assert batch.coarse_labels is None
    assert batch.images.flags.writeable


def test_cifar_binary_truncated(tmp_path):
    content, *_ = cifar_rows(3)
    path = write(tmp_path / "data_batch_3.bin", content[:-100])
    with pytest.raises(
        DataError,
        match=r"data_batch_3\.bin is 9,119 bytes; a cifar10 file of 3 rows of 3,073 bytes is 9,219 bytes\. The file is truncated: download it again \(superconv data fetch cifar10\)",
    ):
        read_cifar_binary(path, rows=3)


def test_cifar_binary_oversize(tmp_path):
    content, *_ = cifar_rows(3)
    path = write(tmp_path / "b.bin", content + b"\0")
    with pytest.raises(DataError, match=r"9,220 bytes.*9,219 bytes.*oversize"):
        read_cifar_binary(path, rows=3)


def test_cifar_binary_without_row_count_needs_whole_rows(tmp_path):
    content, *_ = cifar_rows(2, "cifar100")
    assert len(read_cifar_binary(write(tmp_path / "ok.bin", content), kind="cifar100").labels) == 2
    path = write(tmp_path / "b.bin", content[:-1])
    with pytest.raises(DataError, match=r"not a whole number of cifar100 rows of 3,074 bytes"):
        read_cifar_binary(path, kind="cifar100")


@pytest.mark.parametrize(
    ("kind", "byte", "value", "message"),
    [
        ("cifar10", 0, 10, r"label 10 at row 1 is out of range; cifar10 labels are 0\.\.9"),
        ("cifar100", 1, 100, r"label 100 at row 1 is out of range; cifar100 labels are 0\.\.99"),
        (
            "cifar100",
            0,
            20,
            r"coarse label 20 at row 1 is out of range; cifar100 coarse labels are 0\.\.19",
        ),
    ],
)
def test_cifar_binary_label_out_of_range(tmp_path, kind, byte, value, message):
    content, *_ = cifar_rows(3, kind)
    row = len(content) // 3
    corrupt = bytearray(content)
    corrupt[row + byte] = value
    path = write(tmp_path / "b.bin", bytes(corrupt))
    with pytest.raises(DataError, match=message):
        read_cifar_binary(path, kind=kind, rows=3)


def test_checksum_mismatch_names_both_sums(tmp_path):
    content, *_ = cifar_rows(1)
    path = write(tmp_path / "b.bin", content)
    with pytest.raises(
        DataError,
        match=r"b\.bin has sha256 [0-9a-f]{64}, but the official file has 0{64}\. The file is corrupt",
    ):
        read_cifar_binary(path, rows=1, sha256="0" * 64)
    import hashlib

    good = hashlib.sha256(content).hexdigest()
    assert read_cifar_binary(path, rows=1, sha256=good).labels.shape == (1,)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.bin does not exist: download it again"):
        read_cifar_binary(tmp_path / "nope.bin")


# ---------------------------------------------------------------- CIFAR python


def python_batch(kind: str, n: int = 4, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    _, images, fine, coarse = cifar_rows(n, kind, seed)
    if kind == "cifar10":
        obj = {
            b"batch_label": b"training batch 1 of 5",
            b"data": images.reshape(n, -1),
            b"labels": fine.tolist(),
        }
    else:
        obj = {
            b"data": images.reshape(n, -1),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": coarse.tolist(),
        }
    obj[b"filenames"] = [b"x.png"] * n
    return obj, images, fine


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_python_reads_official_layout(tmp_path, kind, protocol):
    obj, images, fine = python_batch(kind)
    path = write(tmp_path / "data_batch_1", pickle.dumps(obj, protocol=protocol))
    batch = read_cifar_python(path, kind=kind, rows=4)
    np.testing.assert_array_equal(batch.images, images)
    np.testing.assert_array_equal(batch.labels, fine)


def test_cifar_python_reads_numpy1_era_pickles(tmp_path):
    # Official batches were pickled when numpy's module was numpy.core.
    obj, images, _ = python_batch("cifar10")
    content = pickle.dumps(obj, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in content
    batch = read_cifar_python(write(tmp_path / "data_batch_1", content))
    np.testing.assert_array_equal(batch.images, images)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_unpickler_refuses_code_and_never_runs_it(tmp_path, protocol):
    marker = tmp_path / "pwned"
    obj, *_ = python_batch("cifar10")
    obj[b"labels"] = _Exploit(marker)
    path = write(tmp_path / "data_batch_1", pickle.dumps(obj, protocol=protocol))
    with pytest.raises(
        DataError,
        match=rf"refusing to unpickle (posix|nt)\.system from {path}: CIFAR python batches hold only plain data",
    ):
        read_cifar_python(path)
    assert not marker.exists()


def test_unpickler_refuses_builtins(tmp_path):
    path = write(tmp_path / "test_batch", pickle.dumps({b"data": complex(1, 2)}))
    with pytest.raises(DataError, match=r"refusing to unpickle builtins\.complex"):
        read_cifar_python(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.pop(b"labels"), r"has no labels entry"),
        (lambda o: o.__setitem__(b"labels", [1, 2, 3]), r"holds 4 images but 3 labels"),
        (lambda o: o.__setitem__(b"data", o[b"data"][:, :100]), r"images have 100 bytes each"),
        (
            lambda o: o.__setitem__(b"data", o[b"data"].astype(np.int16)),
            r"'data' is ndarray int16\[4, 3072\]",
        ),
        (lambda o: o[b"labels"].__setitem__(0, 12), r"label 12 at row 0 is out of range"),
    ],
)
def test_cifar_python_structure_errors(tmp_path, mutate, message):
    obj, *_ = python_batch("cifar10")
    mutate(obj)
    path = write(tmp_path / "data_batch_2", pickle.dumps(obj, protocol=2))
    with pytest.raises(DataError, match=message):
        read_cifar_python(path)


def test_cifar_python_truncated_and_row_count(tmp_path):
    obj, *_ = python_batch("cifar10")
    content = pickle.dumps(obj, protocol=2)
    path = write(tmp_path / "data_batch_4", content[: len(content) // 2])
    with pytest.raises(
        DataError, match=r"data_batch_4 is not a readable pickle .* truncated or corrupt"
    ):
        read_cifar_python(path)
    path = write(tmp_path / "data_batch_5", content)
    with pytest.raises(DataError, match=r"holds 4 images; the official file has 10,000"):
        read_cifar_python(path, rows=10_000)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False])
def test_idx_pair_gz_and_raw(tmp_path, compress):
    ip, lp, images, labels = write_mnist_pair(tmp_path, compress=compress)
    x, y = read_idx_split(ip, lp, count=6)
    assert x.shape == (6, 1, 28, 28) and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images)
    np.testing.assert_array_equal(y, labels)


def test_encode_idx_matches_spec_and_is_reproducible():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert encode_idx(array) == idx_bytes(array)
    assert gzip.decompress(encode_idx(array, compress=True)) == idx_bytes(array)
    assert encode_idx(array, compress=True) == encode_idx(array, compress=True)


def test_idx_wrong_magic(tmp_path):
    ip, lp, *_ = write_mnist_pair(tmp_path)
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte\.gz starts with magic number 2049, but IDX image files start with 2051.*swapped",
    ):
        read_idx(lp, magic=2051)
    with pytest.raises(
        DataError, match=r"starts with magic number 2051, but IDX label files start with 2049"
    ):
        read_idx(ip, magic=2049)


def test_idx_truncated_and_oversize(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    content = idx_bytes(images)
    path = write(tmp_path / "t.gz", gzip.compress(content[:-10]))
    with pytest.raises(
        DataError,
        match=r"t\.gz is 1,574 bytes; an IDX image file of shape 2 x 28 x 28 \(as its header says\) is 1,584 bytes\. The file is truncated",
    ):
        read_idx(path, magic=2051)
    path = write(tmp_path / "o", content + b"\0\0")
    with pytest.raises(DataError, match=r"1,586 bytes.*oversize"):
        read_idx(path, magic=2051)
    path = write(tmp_path / "h", content[:10])
    with pytest.raises(
        DataError,
        match=r"is 10 bytes; the header of an IDX image file is 16 bytes\. The file is truncated",
    ):
        read_idx(path, magic=2051)


def test_idx_corrupt_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.zeros((5,), np.uint8)))
    path = write(tmp_path / "labels.gz", packed[: len(packed) // 2])
    with pytest.raises(
        DataError, match=r"labels\.gz is not a valid gzip stream .*truncated or corrupt"
    ):
        read_idx(path, magic=2049)


def test_idx_count_mismatch_and_label_range(tmp_path):
    ip, _, _, labels = write_mnist_pair(tmp_path, n=6)
    lp = write(tmp_path / "five-labels", idx_bytes(labels[:5]))
    with pytest.raises(DataError, match=r"holds 6 images but .*five-labels holds 5 labels"):
        read_idx_split(ip, lp)
    with pytest.raises(DataError, match=r"holds 6 items; the official file holds 60,000"):
        read_idx(ip, magic=2051, count=60_000)
    bad = labels.copy()
    bad[2] = 10
    lp = write(tmp_path / "bad-labels", idx_bytes(bad))
    with pytest.raises(
        DataError, match=r"bad-labels: label 10 at row 2 is out of range; mnist labels are 0\.\.9"
    ):
        read_idx_split(ip, lp)


def test_idx_checksum_is_of_uncompressed_content(tmp_path):
    ip, _, images, _ = write_mnist_pair(tmp_path)
    import hashlib

    read_idx(ip, magic=2051, sha256=hashlib.sha256(idx_bytes(images)).hexdigest())
    with pytest.raises(DataError, match=r"has sha256"):
        read_idx(ip, magic=2051, sha256=hashlib.sha256(ip.read_bytes()).hexdigest())


# ---------------------------------------------------------------- locating and load_dataset


def test_locate_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERCONV_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locate_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert locate_data_dir() == tmp_path / "env"
    monkeypatch.delenv("SUPERCONV_DATA")
    assert locate_data_dir() == tmp_path / "xdg" / "superconv" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert locate_data_dir() == tmp_path / "home" / ".cache" / "superconv" / "data"


def test_unknown_name_suggests():
    with pytest.raises(
        DataError,
        match=r"unknown data set 'cifar-10'; did you mean 'cifar10'\? Known: cifar10, cifar100, mnist, fashion-mnist, mnist-demo",
    ):
        load_dataset("cifar-10")


def test_missing_dataset_names_files_folder_and_fetch(tmp_path):
    with pytest.raises(
        DataError,
        match=r"cifar100 was not found in .*nothing \(the folder does not exist\)\. Expected cifar-100-binary/ with train\.bin, test\.bin or cifar-100-python/ with train, test\. Get it with `superconv data fetch cifar100`",
    ):
        load_dataset("cifar100", tmp_path / "nothing")
    with pytest.raises(
        DataError,
        match=r"mnist was not found in .* Expected mnist/ with train-images-idx3-ubyte\.gz, .*superconv data fetch mnist",
    ):
        load_dataset("mnist", tmp_path)


def test_incomplete_folder_lists_missing_files(tmp_path):
    write(tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin", b"")
    with pytest.raises(
        DataError,
        match=r"cifar-10-batches-bin is incomplete: missing data_batch_2\.bin, data_batch_3\.bin, data_batch_4\.bin, data_batch_5\.bin, test_batch\.bin",
    ):
        load_dataset("cifar10", tmp_path)
    write_mnist_pair(tmp_path / "mnist")
    with pytest.raises(
        DataError, match=r"mnist is incomplete: missing t10k-images-idx3-ubyte\[\.gz\], t10k-labels"
    ):
        load_dataset("mnist", tmp_path)


@pytest.fixture(scope="module")
def sparse_cifar10(tmp_path_factory) -> Path:
    """A full-size CIFAR-10 binary copy of zero bytes (sparse files: instant to write)."""
    root = tmp_path_factory.mktemp("sparse")
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        with open(write(root / "cifar-10-batches-bin" / name, b""), "r+b") as f:
            f.truncate(10_000 * 3073)
    return root


def test_load_verifies_checksums_by_default(sparse_cifar10):
    with pytest.raises(
        DataError,
        match=rf"data_batch_1\.bin has sha256 [0-9a-f]{{64}}, but the official file has {known_sha256('cifar10', 'data_batch_1.bin')}.*verify=False",
    ):
        load_dataset("cifar10", sparse_cifar10)


def test_load_prefers_binary_then_python(sparse_cifar10, tmp_path):
    # A python folder of junk next to a complete binary folder: binary wins.
    root = tmp_path / "both"
    (root).mkdir()
    (root / "cifar-10-batches-bin").symlink_to(sparse_cifar10 / "cifar-10-batches-bin")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write(root / "cifar-10-batches-py" / name, b"junk")
    ds = load_dataset("cifar10", root, verify=False)
    assert ds.train_x.shape == (50_000, 3, 32, 32) and ds.test_y.shape == (10_000,)
    assert ds.mean == (0.0, 0.0, 0.0) and ds.classes[0] == "airplane"
    # Without the binary folder the python version is read (and here rejected).
    (root / "cifar-10-batches-bin").unlink()
    with pytest.raises(
        DataError, match=r"cifar-10-batches-py/data_batch_1 is not a readable pickle"
    ):
        load_dataset("cifar10", root, verify=False)


def test_fashion_mnist_found_in_debian_location(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-dataset-fashion-mnist"
    for base in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        write(system / "data" / "fashion" / f"{base}.gz", b"")
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST_DIRS", (str(system),))
    # The zero-byte stand-ins are found, then rejected by the reader: proof of the lookup.
    with pytest.raises(
        DataError, match=rf"{system}/data/fashion/train-images-idx3-ubyte\.gz has 0 bytes"
    ):
        load_dataset("fashion-mnist", tmp_path / "empty")


# ---------------------------------------------------------------- Dataset and stats


def test_channel_stats_match_float64_oracle():
    x = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.double().permute(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(mean, ref.mean(1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(1, unbiased=False).numpy(), rtol=1e-12)


def small_dataset(n=40, classes=4) -> Dataset:
    x = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(n) % classes
    mean, std = channel_stats(x)
    names = tuple(str(c) for c in range(classes))
    return Dataset("toy", x, y, x[:8].clone(), y[:8].clone(), names, mean, std)


def test_dataset_subset_holdout_and_loader():
    ds = small_dataset()
    sub = ds.subset(balanced_subset(ds.train_y, 20, seed=1))
    assert len(sub.train_y) == 20 and sub.test_x is ds.test_x and sub.mean == ds.mean
    tuned = ds.holdout(8, seed=0)
    assert len(tuned.train_y) == 32 and len(tuned.test_y) == 8
    assert torch.bincount(tuned.test_y).tolist() == [2, 2, 2, 2]
    assert not tuned.loader("test", 5).train and len(tuned.loader("test", 5)) == 2
    assert len(ds.loader("train", 8)) == 5
    with pytest.raises(ValueError, match=r"train_y must be int64"):
        Dataset(
            "bad", ds.train_x, ds.train_y.int(), ds.test_x, ds.test_y, ds.classes, ds.mean, ds.std
        )


# ---------------------------------------------------------------- subsets


def test_balanced_subset_exact_deterministic_seeded():
    labels = torch.arange(1000) % 10
    a = balanced_subset(labels, 300, seed=3)
    assert torch.bincount(labels[a]).tolist() == [30] * 10
    assert len(torch.unique(a)) == 300 and torch.equal(a, torch.sort(a).values)
    assert torch.equal(a, balanced_subset(labels, 300, seed=3))
    assert not torch.equal(a, balanced_subset(labels, 300, seed=4))


def test_balanced_subset_errors():
    labels = torch.arange(100) % 10
    with pytest.raises(
        ValueError,
        match=r"n=105 is not a non-negative multiple of the 10 classes.*e\.g\. 100 or 110",
    ):
        balanced_subset(labels, 105, seed=0)
    with pytest.raises(ValueError, match=r"class 0 has 10 samples, fewer than the 11 per class"):
        balanced_subset(labels, 110, seed=0)


def test_train_val_split_disjoint_balanced_complete():
    labels = torch.arange(500) % 5
    train, val = train_val_split(labels, 50, seed=7)
    assert torch.bincount(labels[val]).tolist() == [10] * 5
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(500))
    t2, v2 = train_val_split(labels, 50, seed=7)
    assert torch.equal(v2, val) and torch.equal(t2, train)
    assert not torch.equal(train_val_split(labels, 50, seed=8)[1], val)


# ---------------------------------------------------------------- loader


def toy_images(n=50, c=3, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g), torch.arange(n)


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def make_loader(n=50, batch_size=8, **kw):
    x, y = toy_images(n)
    return DeviceLoader(x, y, batch_size, mean=MEAN, std=STD, **kw)


def test_batches_are_a_pure_function_of_seed_and_iteration():
    a = make_loader(crop_pad=2, seed=5)
    b = make_loader(crop_pad=2, seed=5)
    later = a.batch(17)  # out of order: no hidden history
    for i in (0, 6, 17, 3):
        xa, ya = a.batch(i)
        xb, yb = b.batch(i)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(a.batch(17)[0], later[0])
    other = make_loader(crop_pad=2, seed=6)
    assert not torch.equal(other.batch(0)[1], a.batch(0)[1])


@pytest.mark.parametrize(("drop_last", "per_epoch", "covered"), [(True, 6, 48), (False, 7, 50)])
def test_epochs_cover_each_sample_once_across_boundaries(drop_last, per_epoch, covered):
    loader = make_loader(drop_last=drop_last)
    assert len(loader) == per_epoch
    epochs = []
    for epoch in range(3):
        seen = torch.cat([loader.batch(epoch * per_epoch + i)[1] for i in range(per_epoch)])
        assert len(seen) == covered == len(torch.unique(seen))
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert torch.equal(loader.batch_indices(per_epoch), loader.permutation(1)[:8])


def reference_flip_and_crop(image, flip, dy, dx, pad):
    """Slow, obviously correct per-pixel version."""
    c, h, w = image.shape
    if flip:
        image = image.flip(2)
    out = torch.zeros_like(image)
    for i in range(h):
        for j in range(w):
            si, sj = i + dy - pad, j + dx - pad
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = image[:, si, sj]
    return out


def test_flip_and_crop_on_hand_made_images():
    image = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4)
    flipped = flip_and_crop(image, torch.tensor([True]), None, 0)
    assert flipped[0, 0, 0].tolist() == [4, 3, 2, 1]
    shifted = flip_and_crop(image, None, torch.tensor([[0, 0]]), 2)  # down-right by 2
    assert shifted[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 2], [0, 0, 5, 6]]
    same = flip_and_crop(image, None, torch.tensor([[2, 2]]), 2)
    assert torch.equal(same, image)
    batch, _ = toy_images(6, h=5, w=7)
    flips = torch.tensor([True, False, True, False, True, False])
    shifts = torch.tensor([[0, 8], [3, 1], [8, 0], [4, 4], [1, 7], [0, 0]])
    out = flip_and_crop(batch, flips, shifts, 4)
    for b in range(6):
        ref = reference_flip_and_crop(batch[b], bool(flips[b]), *shifts[b].tolist(), 4)
        assert torch.equal(out[b], ref)


def test_flip_only_loader_serves_originals_or_mirrors():
    loader = make_loader(flip=True)
    x, _ = toy_images()
    out, y = loader.batch(0)
    plain = loader.normalise(x[y])
    mirrored = loader.normalise(x[y].flip(3))
    flipped = [torch.equal(out[i], mirrored[i]) for i in range(len(y))]
    assert all(torch.equal(out[i], plain[i]) or flipped[i] for i in range(len(y)))
    assert 0 < sum(flipped) < len(y)


def test_normalisation_matches_formula_and_eval_order():
    loader = make_loader(train=False)
    x, y = toy_images()
    assert len(loader) == 7  # last partial batch kept
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [8] * 6 + [2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    got = torch.cat([b[0] for b in batches])
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (x.double() / 255 - mean) / std
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_sharding_is_a_disjoint_split_of_the_global_batch():
    single = make_loader(batch_size=12, crop_pad=2, seed=3)
    ranks = [make_loader(batch_size=4, crop_pad=2, seed=3, rank=r, world_size=3) for r in range(3)]
    assert len(ranks[0]) == len(single) == 4
    for i in (0, 5):
        parts = [r.batch(i) for r in ranks]
        indices = torch.cat([p[1] for p in parts])
        assert len(torch.unique(indices)) == 12
        x, y = single.batch(i)
        assert torch.equal(indices, y) and torch.equal(torch.cat([p[0] for p in parts]), x)
    evals = [make_loader(batch_size=4, train=False, rank=r, world_size=3) for r in range(3)]
    served = torch.cat([b[1] for e in evals for b in e])
    assert torch.equal(served, torch.arange(50))
    assert shard_bounds(50, 3, 0) == (0, 17) and shard_bounds(50, 3, 2) == (34, 50)


def test_iterator_and_state_dict_resume():
    loader = make_loader(crop_pad=1)
    iterator = iter(loader)
    for _ in range(4):
        next(iterator)
    state = loader.state_dict()
    assert state["iteration"] == 4
    resumed = make_loader(crop_pad=1)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 2 and resumed.iteration == 6
    assert torch.equal(rest[0][0], loader.batch(4)[0])
    assert len(list(resumed)) == 6  # the next full epoch
    with pytest.raises(ValueError, match=r"different loader \(seed: saved 0, now 1\)"):
        make_loader(seed=1).load_state_dict(state)


def test_output_dtype_and_layout():
    x, _ = make_loader(dtype=torch.bfloat16, channels_last=True).batch(0)
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean": (0.5,)}, r"images have 3 channels but mean has 1"),
        ({"batch_size": 64}, r"50 samples make no full batch of 64 x 1 ranks"),
        ({"rank": 2, "world_size": 2}, r"need 0 <= rank < world_size"),
        ({"std": (0.2, 0.0, 0.3)}, r"std must be positive"),
    ],
)
def test_loader_argument_errors(kwargs, message):
    x, y = toy_images()
    args = {"mean": MEAN, "std": STD, "batch_size": 8} | kwargs
    with pytest.raises(ValueError, match=message):
        DeviceLoader(x, y, args.pop("batch_size"), **args)


# ---------------------------------------------------------------- shipped demo and real data


def test_demo_assets_load_verified_and_balanced():
    ds = load_dataset("mnist-demo")  # verify=True: the embedded sums are checked
    assert ds.train_x.shape == (10_000, 1, 28, 28) and ds.test_x.shape == (2_000, 1, 28, 28)
    assert torch.bincount(ds.train_y).tolist() == [1_000] * 10
    assert torch.bincount(ds.test_y).tolist() == [200] * 10
    assert abs(ds.mean[0] - 0.1307) < 0.01


def load_real_or_skip(name: str, data_dir: Path):
    """Load a real data set; skip only when its folder is absent, never on a bad file."""
    if not any((data_dir / folder).is_dir() for folder in data_mod.DATASETS[name].folders):
        pytest.skip(f"SUPERCONV_DATA not set / data not found ({name} not in {data_dir})")
    return load_dataset(name, data_dir)


@pytest.fixture(scope="module")
def cifar10(data_dir):
    return load_real_or_skip("cifar10", data_dir)


@pytest.fixture(scope="module")
def mnist(data_dir):
    return load_real_or_skip("mnist", data_dir)


def test_real_cifar10(cifar10):
    assert cifar10.train_x.shape == (50_000, 3, 32, 32)
    assert cifar10.test_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(cifar10.train_y).tolist() == [5_000] * 10
    assert torch.bincount(cifar10.test_y).tolist() == [1_000] * 10
    # /work/shared/data/README.md, 0..255 scale, 3 decimals.
    np.testing.assert_allclose(np.array(cifar10.mean) * 255, [125.307, 122.950, 113.865], atol=6e-4)
    np.testing.assert_allclose(np.array(cifar10.std) * 255, [62.993, 62.089, 66.705], atol=6e-4)


def test_real_mnist(mnist):
    assert mnist.train_x.shape == (60_000, 1, 28, 28) and mnist.test_x.shape == (10_000, 1, 28, 28)
    assert round(mnist.mean[0], 4) == 0.1307 and round(mnist.std[0], 4) == 0.3081


def test_real_cifar10_loader_batch(cifar10):
    loader = cifar10.loader("train", 128, crop_pad=4)
    x, y = loader.batch(len(loader))  # first batch of epoch 1
    assert x.shape == (128, 3, 32, 32) and y.shape == (128,)
    assert abs(float(x.mean())) < 0.5
