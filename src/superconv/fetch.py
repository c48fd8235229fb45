"""Download the official data archives into the data folder (``superconv data fetch``).

For users with a network. Each file is fetched with :mod:`urllib` (standard
library only) into ``NAME.part``, resumed with an HTTP ``Range`` request when a
previous download was cut off, checked against the published MD5 and only then
renamed to its final name, so the data folder never holds a half file under a
trusted name. A file whose checksum does not match is deleted. CIFAR tar
archives are then extracted safely (no absolute paths, no ``..``, no links or
devices; ``tarfile``'s ``"data"`` filter where Python has it) into the layout
:func:`superconv.data.load_dataset` reads::

    cifar-10-batches-bin/   data_batch_1.bin .. data_batch_5.bin, test_batch.bin
    cifar-100-binary/       train.bin, test.bin
    mnist/                  train-images-idx3-ubyte.gz, ... (the four IDX files, kept gzipped)
    fashion-mnist/          the same four IDX files

Sources and checksums: CIFAR from the authors' page (Krizhevsky), MNIST from
the ossci-datasets S3 mirror and Fashion-MNIST from Zalando's S3 bucket, with
the MD5 sums torchvision lists for them. ``url_base`` (or the environment
variable ``SUPERCONV_URL_BASE``) replaces the server, e.g. for a local mirror
or the tests' local HTTP server.

This module writes data files, not results: downloads stream into ``.part``
files (too large to hold in memory for :func:`superconv.records.atomic_write_bytes`)
and become visible by an atomic rename, the same guarantee.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from superconv.data import DataError, locate_data_dir
from superconv.errors import did_you_mean

URL_BASE_ENV = "SUPERCONV_URL_BASE"
CHUNK = 1 << 20  # bytes read per network call


@dataclass(frozen=True)
class Source:
    """Where a data set's official files are and what to do with them.

    ``files`` are ``(file name, md5)`` pairs under ``url_base``. ``folder`` is
    the sub-folder of the data folder the files are saved in (IDX files stay
    there as they are); an ``archive`` (tar.gz) is saved in the data folder
    itself, extracted there (it holds its own top folder) and then deleted.
    """

    name: str
    url_base: str
    files: tuple[tuple[str, str], ...]
    folder: str = ""
    archive: bool = False


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

SOURCES: Mapping[str, Source] = MappingProxyType(
    {
        "cifar10": Source(
            "cifar10",
            "https://www.cs.toronto.edu/~kriz/",
            (("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),),
            archive=True,
        ),
        "cifar100": Source(
            "cifar100",
            "https://www.cs.toronto.edu/~kriz/",
            (("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8"),),
            archive=True,
        ),
        # torchvision.datasets.MNIST's first mirror and its MD5 sums.
        "mnist": Source(
            "mnist",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            tuple(
                zip(
                    _IDX_FILES,
                    (
                        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                        "d53e105ee54ea40749a09fcbcd1e9432",
                        "9fb629c4189551a2d022fa330f9573f3",
                        "ec29112dd5afa0611ce80d1b7f02629c",
                    ),
                )
            ),
            folder="mnist",
        ),
        # torchvision.datasets.FashionMNIST's mirror (an S3 website: http only) and MD5 sums.
        "fashion-mnist": Source(
            "fashion-mnist",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            tuple(
                zip(
                    _IDX_FILES,
                    (
                        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                        "25c81989df183df01b3e8a0aad5dffbe",
                        "bef4ecab320f06d8554ea6380940ec79",
                        "bb300cfdad3c16e7a12a480ee83cd310",
                    ),
                )
            ),
            folder="fashion-mnist",
        ),
    }
)


def fetch(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    url_base: str | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download data set ``name`` into the data folder; return the data folder.

    ``data_dir`` as :func:`superconv.data.locate_data_dir`. ``url_base``
    replaces the server (default: ``$SUPERCONV_URL_BASE``, else the official
    one). ``checksums`` maps file names to MD5 sums that replace the published
    ones (for mirrors of other files and for tests). Files already downloaded
    and verified are not fetched again; a ``.part`` left by an interrupted
    download is resumed. Raises :class:`~superconv.data.DataError` (a
    ``UserError``) naming the URL for network errors, HTTP errors and checksum
    mismatches.
    """
    if name not in SOURCES:
        raise DataError(
            f"cannot fetch {name!r}{did_you_mean(name, SOURCES)} Downloadable: "
            f"{', '.join(SOURCES)} (mnist-demo ships inside the package)."
        )
    source = SOURCES[name]
    root = locate_data_dir(data_dir)
    folder = root / source.folder if source.folder else root
    # The folders this call makes (from the first missing one down): removed again,
    # if still empty, when the download fails, so a failed fetch leaves nothing behind.
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    _make_folder(folder)
    base = url_base or os.environ.get(URL_BASE_ENV) or source.url_base
    base = base if base.endswith("/") else base + "/"
    try:
        for file_name, md5 in source.files:
            expected = (checksums or {}).get(file_name, md5)
            path = download(
                base + file_name, folder / file_name, expected, progress=progress, timeout=timeout
            )
            if source.archive:
                extract_tar(path, root)
                path.unlink()  # extracted and no longer needed (the data set is ~160 MB)
    except BaseException:
        for empty in made:  # deepest first; a folder holding a .part (resumable) stays
            try:
                empty.rmdir()
            except OSError:
                break
        raise
    return root


def _make_folder(folder: Path) -> None:
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise DataError(
            f"cannot create the data folder {folder}: {blocker} is a file, not a folder. "
            "Point --data-dir (or $SUPERCONV_DATA) at a folder."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the data folder {folder}: {exc.strerror}. "
            "Choose a folder you can write to with --data-dir."
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(
            f"the data folder {folder} is not writable. Choose another one with --data-dir."
        )


def md5_file(path: str | os.PathLike) -> str:
    """The MD5 hex digest of a file (read in chunks)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it, and check its MD5.

    A ``dest`` that already has the right checksum is kept as it is. The
    partial file survives an interrupted download (run again to resume); a
    complete file with the wrong checksum is deleted before the error is raised.
    """
    dest = Path(dest)
    if dest.is_file() and md5_file(dest) == md5:
        return dest
    part = dest.with_name(dest.name + ".part")
    _fetch_to(url, part, progress=progress, timeout=timeout)
    actual = md5_file(part)
    if actual != md5:
        part.unlink()
        raise DataError(
            f"checksum mismatch for {url}: MD5 {actual}, expected {md5}. The downloaded file "
            "was deleted. Run the command again; if it happens again the server sends a "
            "different file (a proxy or a changed mirror): try another --url-base."
        )
    os.replace(part, dest)
    return dest


def _fetch_to(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, continuing from its current size when the server allows."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "superconv-data-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part file is already complete
            return
        raise DataError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}. Check the address "
            "(--url-base) or try again later."
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"cannot download {url}: {reason}. `superconv data fetch` needs network access; "
            "without it, copy the files into the data folder by hand (see `superconv data check`)."
        ) from exc
    with response:
        resumed = offset and response.status == 206 and _range_start(response) == offset
        if not resumed:
            offset = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        bar = _progress_bar(progress, total, offset, part.name.removesuffix(".part"))
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
        except OSError as exc:  # includes socket timeouts and resets mid-stream
            raise DataError(
                f"the download of {url} was interrupted ({exc}). Run the command again to "
                f"resume it (the partial file {part} is kept)."
            ) from exc
        finally:
            if bar is not None:
                bar.close()
    if total is not None and part.stat().st_size < total:
        raise DataError(
            f"the download of {url} ended early ({part.stat().st_size:,} of {total:,} bytes). "
            f"Run the command again to resume it (the partial file {part} is kept)."
        )


def _range_start(response) -> int | None:
    """The first byte of a 206 response's ``Content-Range: bytes a-b/n``."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _progress_bar(enabled: bool, total: int | None, initial: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name
    )


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse anything but plain files and folders inside ``dest`` (no traversal, no links)."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or PurePosixPath(member.name).is_absolute():
        problem = "an absolute path"
    elif ".." in parts or any("\\" in p or ":" in p for p in parts):
        problem = "a path leaving the data folder"
    elif not (member.isfile() or member.isdir()):
        problem = "a link or special file"
    else:
        return
    raise DataError(
        f"{archive} holds {problem} ({member.name!r}); refusing to extract it. "
        "The official archives hold plain files only: delete it and download it again."
    )


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a tar(.gz) archive into ``dest`` safely; return the top-level paths made.

    Every member is checked first (:func:`_check_member`); the archive is
    extracted into a temporary folder inside ``dest`` and its files moved into
    place, so an archive that fails half-way leaves no partial folder behind.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(
            f"{archive} is not a readable tar archive ({exc}); delete it and fetch again."
        ) from exc
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        with tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.12, and 3.11.4+
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - old Pythons; members were checked above
                tar.extractall(tmp, members=members)  # noqa: S202
        tops = sorted({dest / PurePosixPath(m.name).parts[0] for m in members if m.name})
        for path in sorted(tmp.rglob("*")):
            target = dest / path.relative_to(tmp)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    except tarfile.TarError as exc:
        raise DataError(f"{archive} is damaged ({exc}); delete it and fetch it again.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tops
