"""Make the MNIST demo subset shipped in src/superconv/assets (``load_dataset("mnist-demo")``).

Selection: from the official MNIST files, a class-balanced subset of 10,000
training images (1,000 per digit) and 2,000 test images (200 per digit), drawn
by ``superconv.data.balanced_subset`` with seed 0, kept in the original file
order. Written as IDX .gz files (reproducible bytes: gzip mtime 0, level 9)
plus PROVENANCE.md with the sums of the inputs and outputs.

Usage::

    PYTHONPATH=src python tools/make_demo_data.py --source /work/shared/data/mnist

Prints the sha256 sums of the uncompressed outputs; they belong in
``superconv.data.formats._OFFICIAL_SHA256``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import torch

from superconv.data import balanced_subset
from superconv.data.formats import encode_idx, known_sha256, read_idx_split

SEED = 0
TRAIN_SIZE = 10_000  # 1,000 per class
TEST_SIZE = 2_000  # 200 per class
SPLITS = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", TRAIN_SIZE),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", TEST_SIZE),
)
ASSETS = Path(__file__).resolve().parents[1] / "src" / "superconv" / "assets"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder of the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=ASSETS)
    args = parser.parse_args(argv)

    inputs, outputs = [], []
    for images_base, labels_base, size in SPLITS:
        images_path = args.source / f"{images_base}.gz"
        labels_path = args.source / f"{labels_base}.gz"
        images, labels = read_idx_split(  # verified against the official sums
            images_path,
            labels_path,
            images_sha256=known_sha256("mnist", images_base),
            labels_sha256=known_sha256("mnist", labels_base),
        )
        index = balanced_subset(torch.from_numpy(labels), size, seed=SEED).numpy()
        for path in (images_path, labels_path):
            raw = path.read_bytes()
            inputs.append((path.name, _sha256(raw), _sha256(gzip.decompress(raw))))
        for base, array in ((images_base, images[index, 0]), (labels_base, labels[index])):
            content = encode_idx(array.astype("uint8"))
            packed = encode_idx(array.astype("uint8"), compress=True)
            name = f"mnist-demo-{base}.gz"
            (args.out / name).write_bytes(packed)
            outputs.append((name, base, _sha256(packed), _sha256(content), len(packed)))

    lines = [
        '# Provenance of the MNIST demo subset (`load_dataset("mnist-demo")`)',
        "",
        "Made by `tools/make_demo_data.py` from the official MNIST IDX files",
        "(LeCun, Cortes & Burges; the copy at `/work/shared/data/mnist`).",
        "",
        "## Selection",
        f"- training: {TRAIN_SIZE:,} images of `train-images-idx3-ubyte`, 1,000 per digit;",
        f"- test: {TEST_SIZE:,} images of `t10k-images-idx3-ubyte`, 200 per digit;",
        f"- drawn by `superconv.data.balanced_subset(labels, n, seed={SEED})` (torch",
        f"  {torch.__version__}: per class, in label order, the first n/10 of a",
        "  `torch.randperm` of that class's indices), kept in the original file order;",
        "- stored as IDX, gzip level 9 with mtime 0 (reproducible bytes).",
        "",
        "## Source files",
        "| file | sha256 (as stored) | sha256 (uncompressed) |",
        "|---|---|---|",
        *(f"| {n} | `{s}` | `{u}` |" for n, s, u in inputs),
        "",
        "## Produced files",
        "| file | bytes | sha256 (as stored) | sha256 (uncompressed) |",
        "|---|---|---|---|",
        *(f"| {n} | {size:,} | `{s}` | `{u}` |" for n, _, s, u, size in outputs),
        "",
        "The uncompressed sums are the ones `superconv.data.formats.known_sha256`",
        "checks on every load (verify=True).",
        "",
    ]
    (args.out / "PROVENANCE.md").write_text("\n".join(lines))
    for _, base, _, content_sum, _ in outputs:
        print(f"{content_sum}  mnist-demo/{base}")


if __name__ == "__main__":
    main()
