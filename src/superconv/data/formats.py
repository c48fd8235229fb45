"""Readers for the official CIFAR-10/100 and (Fashion-)MNIST files, with validation.

Every reader checks what it can before trusting a file: its size against the
format, magic numbers, label ranges, image/label counts and, where we know the
official file's sha256, the checksum. Any problem raises :class:`DataError`
whose message names the file, says what is wrong and what to do about it.

Formats (all uint8, no network involved):

- CIFAR *binary* version: rows of ``label bytes + 3,072 pixel bytes`` (R plane,
  G plane, B plane, each 32x32 row-major). CIFAR-10 has one label byte,
  CIFAR-100 two (coarse, then fine).
- CIFAR *python* version: pickled dicts ``{b"data": uint8 [N, 3072],
  b"labels": [...]}`` (CIFAR-100: ``b"fine_labels"``, ``b"coarse_labels"``),
  read with an unpickler that admits plain data only.
- IDX (MNIST, Fashion-MNIST): big-endian magic ``0x0000 08 ndim`` (2051 images,
  2049 labels), ``ndim`` uint32 sizes, then the bytes; gzipped or raw.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import math
import pickle
import zlib
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple

import numpy as np

from ..errors import UserError

CifarKind = Literal["cifar10", "cifar100"]

CIFAR_PIXELS = 3 * 32 * 32  # bytes of one image in either CIFAR version
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N)

# sha256 of the official files, as "sum  data-set/file-name" (sha256sum style).
# For IDX files the sum is over the *uncompressed* content: the official .gz
# bytes differ between mirrors (the MNIST .gz files at hand are not
# byte-identical to LeCun's), while the content is fixed (our MNIST train
# images match the published md5 6bbc9ace898e44ae57da46a324031adb). Only files
# checked against a copy at hand are listed; others load unverified.
# CIFAR-10: /work/shared/data/README.md, confirmed on the copy at hand.
# MNIST: computed from the decompressed official files at hand.
# mnist-demo: the subset in superconv/assets, made by tools/make_demo_data.py.
_OFFICIAL_SHA256 = """
cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5  cifar10/data_batch_1.bin
a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed  cifar10/data_batch_2.bin
bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67  cifar10/data_batch_3.bin
014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48  cifar10/data_batch_4.bin
755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add  cifar10/data_batch_5.bin
8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b  cifar10/test_batch.bin
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  mnist/train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  mnist/train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  mnist/t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  mnist/t10k-labels-idx1-ubyte
4a255127afbc14d3773e4fcd1d7c2e2761c29df8644298fa0f6de8c7566c0c25  mnist-demo/train-images-idx3-ubyte
6d5eb9db1c3976f88e738d4fddb6408a4c3280e5484df59a88a41dd537a6b9bf  mnist-demo/train-labels-idx1-ubyte
f86119042da0ce14162adc3a07b1e2dfa241ed2496ef54a09982076048fe115e  mnist-demo/t10k-images-idx3-ubyte
635c92597895b798d13ec63ae31add217c37037d52bd17d34f1359816da8fb70  mnist-demo/t10k-labels-idx1-ubyte
"""


def known_sha256(dataset: str, file_name: str) -> str | None:
    """The official sha256 of ``file_name`` (IDX: base name, no .gz) of ``dataset``, if known."""
    key = f"{dataset}/{file_name}"
    for line in _OFFICIAL_SHA256.split("\n"):
        digest, _, name = line.partition("  ")
        if name == key:
            return digest
    return None


class DataError(UserError):
    """A data file or folder is missing, malformed, or not the official file.

    The message names the file, says what is wrong and what to do.
    """


class CifarBatch(NamedTuple):
    """One CIFAR file: ``images`` uint8 [N, 3, 32, 32], ``labels`` int64 [N].

    ``labels`` are the fine labels for CIFAR-100, whose ``coarse_labels``
    (int64 [N], < 20) are also kept; CIFAR-10 has ``coarse_labels=None``.
    """

    images: np.ndarray
    labels: np.ndarray
    coarse_labels: np.ndarray | None


def remedy(dataset: str) -> str:
    """The standard advice for a damaged or missing file of ``dataset``."""
    if dataset == "mnist-demo":
        return "reinstall superconv (the demo data ships inside the package)"
    return (
        f"download it again (superconv data fetch {dataset}) or point --data-dir / "
        "SUPERCONV_DATA at a complete copy"
    )


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data`` as hex (≈0.1 s for the 180 MB of CIFAR-10)."""
    return hashlib.sha256(data).hexdigest()


def check_sha256(path: Path, data: bytes, expected: str | None, dataset: str) -> None:
    """Raise :class:`DataError` unless ``sha256(data) == expected``; no-op for ``None``.

    We hash the bytes already read for parsing, so verifying costs no extra
    I/O and checks exactly the bytes that get used.
    """
    if expected is None:
        return
    got = sha256_hex(data)
    if got != expected:
        raise DataError(
            f"{path} has sha256 {got}, but the official file has {expected}. "
            f"The file is corrupt or not the official {dataset} file: {remedy(dataset)}. "
            "(verify=False skips this check.)"
        )


def _read_bytes(path: Path, dataset: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: {remedy(dataset)}.") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}): {remedy(dataset)}.") from err


def _size_error(path: Path, size: int, expected: int, what: str, dataset: str) -> DataError:
    problem = "truncated" if size < expected else "longer than the format allows (oversize)"
    return DataError(
        f"{path} is {size:,} bytes; {what} is {expected:,} bytes. "
        f"The file is {problem}: {remedy(dataset)}."
    )


def check_labels(path: Path, labels: np.ndarray, num_classes: int, dataset: str, kind="label"):
    """Raise :class:`DataError` if any label is outside ``0 .. num_classes - 1``."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: {kind} {int(labels[i])} at row {i:,} is out of range; {dataset} "
            f"{kind}s are 0..{num_classes - 1} ({bad.size:,} rows affected). "
            f"The file is corrupt or from another data set: {remedy(dataset)}."
        )


def _cifar_layout(kind: CifarKind) -> tuple[int, int]:
    """(label bytes per row, number of classes) of a CIFAR variant."""
    if kind == "cifar10":
        return 1, 10
    if kind == "cifar100":
        return 2, 100  # coarse byte, then fine byte
    raise ValueError(f"unknown CIFAR kind {kind!r}; use 'cifar10' or 'cifar100'")


def read_cifar_binary(
    path: Path, *, kind: CifarKind = "cifar10", rows: int | None = None, sha256: str | None = None
) -> CifarBatch:
    """Read one file of the CIFAR binary version (``data_batch_1.bin``, ``train.bin``, ...).

    ``rows`` is the expected number of images (10,000 per official CIFAR-10
    batch); ``None`` accepts any whole number of rows. ``sha256`` (or ``None``
    to skip) is checked after the size.
    """
    path = Path(path)
    label_bytes, num_classes = _cifar_layout(kind)
    row = label_bytes + CIFAR_PIXELS
    data = _read_bytes(path, kind)
    if rows is not None and len(data) != rows * row:
        what = f"a {kind} file of {rows:,} rows of {row:,} bytes"
        raise _size_error(path, len(data), rows * row, what, kind)
    if rows is None and (len(data) == 0 or len(data) % row):
        raise DataError(
            f"{path} is {len(data):,} bytes, not a whole number of {kind} rows of {row:,} bytes "
            f"(label byte{'s' if label_bytes > 1 else ''} + 3,072 pixels). "
            f"The file is truncated or not a {kind} binary file: {remedy(kind)}."
        )
    check_sha256(path, data, sha256, kind)
    table = np.frombuffer(data, np.uint8).reshape(-1, row)
    labels = table[:, label_bytes - 1].astype(np.int64)  # the fine label is the last label byte
    check_labels(path, labels, num_classes, kind)
    coarse = None
    if kind == "cifar100":
        coarse = table[:, 0].astype(np.int64)
        check_labels(path, coarse, 20, kind, "coarse label")
    # Copy out of the read-only file buffer: callers get writable, compact arrays.
    images = np.ascontiguousarray(table[:, label_bytes:]).reshape(-1, 3, 32, 32)
    return CifarBatch(images, labels, coarse)


def _first_attr(modules: tuple[str, ...], name: str):
    # numpy 2 moved numpy.core to numpy._core; old pickles name the former,
    # so look in the current module first, then the old one.
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {modules} has {name}")


_RECONSTRUCT = ("numpy._core.multiarray", "numpy.core.multiarray")
_FROMBUFFER = ("numpy._core.numeric", "numpy.core.numeric")

# The globals a pickle of plain data (dicts, lists, bytes, str, ints, numpy
# arrays) may name, mapped to the modules to take them from. Lists, dicts,
# bytes, str and ints need no lookup; numpy arrays need their constructors;
# Python 3 pickles of protocol < 3 spell bytes as _codecs.encode(str,
# "latin1"); protocol-5 pickles of arrays use numpy's _frombuffer.
_PLAIN_DATA_GLOBALS = MappingProxyType(
    {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy", "ndarray"): ("numpy",),
        ("numpy", "dtype"): ("numpy",),
        ("_codecs", "encode"): ("_codecs",),
    }
)


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and numpy arrays.

    Official CIFAR python batches are Python 2 pickles of dicts of bytes,
    lists of ints and uint8 arrays. Any other global (``os.system``,
    ``builtins.eval``, ...) is refused before it is looked up, so a hostile
    file cannot run code.
    """

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as written
        self._path = path

    def find_class(self, module: str, name: str):
        modules = _PLAIN_DATA_GLOBALS.get((module, name))
        if modules is None:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._path}: CIFAR python "
                "batches hold only plain data (arrays, lists, dicts, bytes, strings, ints). "
                "This is not an official CIFAR file; delete it and fetch the official data "
                "(superconv data fetch cifar10 / cifar100)."
            )
        return _first_attr(modules, name)


def unpickle_plain_data(path: Path, data: bytes, dataset: str):
    """Unpickle ``data`` (read from ``path``) with :class:`PlainDataUnpickler`."""
    try:
        return PlainDataUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as err:  # a damaged pickle can fail in many ways; all mean the same here
        raise DataError(
            f"{path} is not a readable pickle ({type(err).__name__}: {err}). "
            f"The file is truncated or corrupt: {remedy(dataset)}."
        ) from err


def read_cifar_python(
    path: Path, *, kind: CifarKind = "cifar10", rows: int | None = None, sha256: str | None = None
) -> CifarBatch:
    """Read one file of the CIFAR python version (``data_batch_1``, ``train``, ...).

    Same result and checks as :func:`read_cifar_binary`; the pickle is read
    with :class:`PlainDataUnpickler`.
    """
    path = Path(path)
    _, num_classes = _cifar_layout(kind)
    data = _read_bytes(path, kind)
    check_sha256(path, data, sha256, kind)
    obj = unpickle_plain_data(path, data, kind)
    if not isinstance(obj, dict):
        raise DataError(
            f"{path} holds a {type(obj).__name__}, but a {kind} python batch is a dict "
            f"with data and labels: {remedy(kind)}."
        )
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    label_key = "labels" if kind == "cifar10" else "fine_labels"
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        raise DataError(
            f"{path} has no {' or '.join(missing)} entry (keys: {sorted(batch)}); "
            f"a {kind} python batch has 'data' and '{label_key}': {remedy(kind)}."
        )
    images = batch["data"]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2):
        raise DataError(
            f"{path}: 'data' is {type(images).__name__} "
            f"{getattr(images, 'dtype', '')}{list(getattr(images, 'shape', []))}; "
            f"a {kind} python batch holds uint8 [N, 3072]: {remedy(kind)}."
        )
    if images.shape[1] != CIFAR_PIXELS:
        raise DataError(
            f"{path}: images have {images.shape[1]:,} bytes each; CIFAR images have 3,072 "
            f"(3 x 32 x 32): {remedy(kind)}."
        )
    if rows is not None and images.shape[0] != rows:
        raise DataError(
            f"{path} holds {images.shape[0]:,} images; the official file has {rows:,}. "
            f"The file is truncated or altered: {remedy(kind)}."
        )

    def as_labels(key: str) -> np.ndarray:
        try:
            values = np.asarray(batch[key], dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as err:
            raise DataError(f"{path}: '{key}' is not a list of integers: {remedy(kind)}.") from err
        if values.shape != (images.shape[0],):
            raise DataError(
                f"{path} holds {images.shape[0]:,} images but {values.size:,} {key}; "
                f"each image needs one label: {remedy(kind)}."
            )
        return values

    labels = as_labels(label_key)
    check_labels(path, labels, num_classes, kind)
    coarse = None
    if kind == "cifar100" and "coarse_labels" in batch:
        coarse = as_labels("coarse_labels")
        check_labels(path, coarse, 20, kind, "coarse label")
    return CifarBatch(images.reshape(-1, 3, 32, 32).copy(), labels, coarse)


def _decompress_if_gzip(path: Path, raw: bytes, dataset: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":  # gzip magic; decide by content, not by the file name
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is not a valid gzip stream ({err}). The file is truncated or corrupt: "
            f"{remedy(dataset)}."
        ) from err


def read_idx(
    path: Path,
    *,
    magic: int,
    count: int | None = None,
    sha256: str | None = None,
    dataset: str = "mnist",
) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or raw) as a uint8 array.

    ``magic`` is the expected magic number (:data:`IDX_IMAGES_MAGIC` 2051 or
    :data:`IDX_LABELS_MAGIC` 2049); ``count`` the expected number of items;
    ``sha256`` the sum of the *uncompressed* content (``None`` skips it).
    """
    path = Path(path)
    content = _decompress_if_gzip(path, _read_bytes(path, dataset), dataset)
    kind = {IDX_IMAGES_MAGIC: "IDX image", IDX_LABELS_MAGIC: "IDX label"}.get(magic, "IDX")
    if len(content) < 4:
        raise DataError(
            f"{path} has {len(content)} bytes, too few for an IDX header. "
            f"The file is truncated: {remedy(dataset)}."
        )
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise DataError(
            f"{path} starts with magic number {found}, but {kind} files start with {magic} "
            f"(2051 = images, 2049 = labels). The file is corrupt or not the file its name says "
            f"(images and labels swapped?): {remedy(dataset)}."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(content) < header:
        raise _size_error(path, len(content), header, f"the header of an {kind} file", dataset)
    dims = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(content) != expected:
        shape = " x ".join(f"{d:,}" for d in dims)
        what = f"an {kind} file of shape {shape} (as its header says)"
        raise _size_error(path, len(content), expected, what, dataset)
    if count is not None and dims[0] != count:
        raise DataError(
            f"{path} holds {dims[0]:,} items; the official file holds {count:,}. "
            f"The file is not the official one: {remedy(dataset)}."
        )
    check_sha256(path, content, sha256, dataset)
    return np.frombuffer(content, np.uint8, offset=header).reshape(dims).copy()


def read_idx_split(
    images_path: Path,
    labels_path: Path,
    *,
    num_classes: int = 10,
    count: int | None = None,
    images_sha256: str | None = None,
    labels_sha256: str | None = None,
    dataset: str = "mnist",
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images/labels IDX pair: (uint8 [N, 1, H, W], int64 [N]), checked to match."""
    images = read_idx(
        images_path, magic=IDX_IMAGES_MAGIC, count=count, sha256=images_sha256, dataset=dataset
    )
    labels = read_idx(
        labels_path, magic=IDX_LABELS_MAGIC, count=count, sha256=labels_sha256, dataset=dataset
    ).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds "
            f"{len(labels):,} labels; they must match one to one: {remedy(dataset)}."
        )
    check_labels(labels_path, labels, num_classes, dataset)
    return images[:, None], labels


def encode_idx(array: np.ndarray, *, compress: bool = False) -> bytes:
    """The IDX encoding of a uint8 array (gzip-compressed, reproducibly, if asked).

    Used to write the demo subset and test files. Compressed output is
    byte-identical for identical input (gzip mtime 0, no file name).
    """
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"encode_idx takes a uint8 array of 1..255 dims, got {array.dtype}")
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    content = header + array.tobytes()
    if not compress:
        return content
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as f:
        f.write(content)
    return out.getvalue()
