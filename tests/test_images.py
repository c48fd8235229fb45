"""Own images (issue 25, item 6): image folders streamed through workers; ImageNet ResNets.

A tiny generated folder: 2 classes of JPEG and PNG images of several sizes, a file
Pillow cannot identify (skipped at scan, with a warning naming it and a count), a
truncated JPEG (replaced when decoded, with a warning naming it) and a text file
(ignored). Skipped, by name, without Pillow.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch

Image = pytest.importorskip(
    "PIL.Image", reason="Pillow not installed: pip install 'superconv[images]'"
)

from superconv.data.folder import FolderLoader, decode, scan_folder  # noqa: E402
from superconv.errors import UserError  # noqa: E402
from superconv.models import ImageNetResNet, build_model, count_parameters  # noqa: E402

SIZES = [(40, 30), (30, 50), (64, 64), (33, 47), (50, 20)]


def _image(size, seed) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i, size in enumerate(SIZES):
            ext = "png" if i % 2 else "jpg"
            _image(size, 10 * c + i).save(root / name / f"{i}.{ext}")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    (root / "cat" / "notes.txt").write_text("ignored")
    return root


def test_scan_skips_an_unreadable_image_with_a_warning_naming_it(folder):
    with pytest.warns(
        UserWarning, match=r"skipped 1 unreadable image\(s\) in .*images: .*dog/broken\.jpg"
    ):
        found = scan_folder(folder)
    assert found.classes == ("cat", "dog") and len(found) == 10
    assert [label for _, label in found.samples] == [0] * 5 + [1] * 5
    assert [p for p, _ in found.skipped] == [str(folder / "dog" / "broken.jpg")]


def test_batches_stream_through_workers_and_are_a_function_of_seed_and_step(folder):
    with pytest.warns(UserWarning):
        found = scan_folder(folder)
    loader = FolderLoader(found, 4, image_size=24, workers=1, seed=3)
    assert len(loader) == 2  # 10 images, last incomplete batch dropped
    first = [loader.batch(s) for s in range(5)]  # crosses epochs 0, 1, 2
    x, y = first[0]
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -3 < x.mean() < 3  # normalised with ImageNet's statistics
    again = FolderLoader(found, 4, image_size=24, workers=0, seed=3)  # other worker count
    for step in (3, 0, 4):  # jumps (a resume) give the same batches
        xb, yb = again.batch(step)
        assert torch.equal(xb, first[step][0]) and torch.equal(yb, first[step][1])
    other = FolderLoader(found, 4, image_size=24, workers=0, seed=4).batch(0)[0]
    assert not torch.equal(other, x)
    evaluated = list(FolderLoader(found, 4, image_size=24, train=False, workers=0))
    assert [len(b[1]) for b in evaluated] == [4, 4, 2]
    assert torch.cat([b[1] for b in evaluated]).tolist() == [0] * 5 + [1] * 5


def test_a_truncated_image_is_replaced_with_a_warning_naming_it(folder):
    buf = io.BytesIO()
    _image((64, 64), 99).save(buf, format="JPEG")
    (folder / "cat" / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    found = scan_folder(folder, check=False)  # header checks would not catch it anyway
    index = [p for p, _ in found.samples].index(str(folder / "cat" / "truncated.jpg"))
    loader = FolderLoader(found, 1, image_size=16, train=False, workers=0)
    with pytest.warns(UserWarning, match=r"cat/truncated\.jpg: cannot decode .*1 replaced"):
        x, y = loader.dataset[(index, 0)]
    assert x.shape == (3, 16, 16)


def test_eval_decode_is_a_centre_crop_of_the_resized_image(tmp_path):
    path = tmp_path / "wide.png"
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 15:25] = 255  # a white vertical band in the middle
    Image.fromarray(image).save(path)
    crop = decode(str(path), 8, train=False, seed=None)  # shorter side -> 9, centre 8x8
    assert crop.shape == (3, 8, 8)
    assert crop[:, :, 3:5].float().mean() > 200 and crop[:, :, 0].float().mean() < 60


def test_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(
        UserError, match=r"image folder .*nowhere cannot be used: it does not exist"
    ):
        scan_folder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match=r"has no class subfolders: expected .*/<class>/<image>"):
        scan_folder(tmp_path / "flat")


def test_imagenet_resnets_have_torchvisions_parameter_counts():
    # torchvision.models.resnet18 / resnet50 (1,000 classes): the published counts.
    assert count_parameters(ImageNetResNet(18)) == 11_689_512
    assert count_parameters(ImageNetResNet(50)) == 25_557_032
    model = build_model("imagenet_resnet18", num_classes=2, bn_mode="torch", bn_maf=0.9)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    zero = ImageNetResNet(50, zero_init_residual=True)
    assert all(not b.bn3.weight.detach().any() for b in zero.blocks)
    with pytest.raises(UserError, match="ImageNet ResNet depth must be 18 or 50, got 34"):
        ImageNetResNet(34)


# ----------------------------------------------------------------------------- the CLI
def _cli_folder(tmp_path, layout_train_val=False):
    """Two classes of 6 PNGs (several sizes), one corrupt file; optionally PATH/train + PATH/val."""
    root = tmp_path / "own-images"
    splits = ("train", "val") if layout_train_val else ("",)
    for split in splits:
        for c, name in enumerate(["cat", "dog"]):
            (root / split / name).mkdir(parents=True)
            for i in range(6 if split != "val" else 2):
                _image(SIZES[i % len(SIZES)], 100 * c + i).save(root / split / name / f"{i}.png")
    (root / splits[0] / "dog" / "corrupt.png").write_bytes(b"\x89PNG but not really")
    return root


FOLDER_FLAGS = ["--model", "resnet8", "--image-size", "32", "--batch-size", "4",
                "--eval-batch-size", "8", "--device", "cpu", "--threads", "1", "--no-progress"]  # fmt: skip


def test_cli_trains_on_an_image_folder_skipping_the_corrupt_file(tmp_path):
    from superconv.cli import main
    from superconv.records import read_csv

    root = _cli_folder(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--dataset", f"folder:{root}", *FOLDER_FLAGS, "--val-size", "2",
            "--iterations", "5", "--eval-every", "5", "--checkpoint-every", "5",
            "--policy", "one_cycle", "--policy-param", "max_lr=0.05", "--out", str(run)]  # fmt: skip
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) in .*dog/corrupt\.png"):
        assert main(args) == 0
    (row,) = read_csv(run / "metrics.csv")
    assert row["iteration"] == 5 and math.isfinite(row["train_loss"])
    assert row["val_acc"] in (0.0, 50.0, 100.0)  # 2 held-out images, one per class
    assert row["test_acc"] is None  # a plain class folder has no test set
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == f"folder:{root}" and config["image_size"] == 32
    assert row["epoch"] == pytest.approx(5 * 4 / 10)  # 12 readable images, 2 held out


def test_cli_lr_find_on_a_train_val_layout(tmp_path, capsys):
    from superconv.cli import main
    from superconv.data.folder import folder_splits

    root = _cli_folder(tmp_path, layout_train_val=True)
    with pytest.warns(UserWarning):
        train, test = folder_splits(f"folder:{root}")
    assert (len(train), len(test), test.classes) == (12, 4, train.classes)  # val/: the test set
    out = tmp_path / "find"
    args = ["lr-find", "--dataset", f"folder:{root}", *FOLDER_FLAGS, "--steps", "12",
            "--mode", "exp", "--start-lr", "1e-4", "--out", str(out)]  # fmt: skip
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\)"):
        assert main(args) == 0
    record = json.loads((out / "range_test.json").read_text())
    assert len(record["curve"]["losses"]) >= 1
    said = capsys.readouterr().out
    assert f"folder:{root}" in said
    assert "--image-size 32" in said  # the Next: command carries it


def test_cli_refuses_image_size_without_a_folder_and_a_missing_folder(tmp_path, capsys):
    from superconv.cli import main

    assert main(["train", "--dataset", "mnist-demo", "--image-size", "32", "--iterations", "1",
                 "--out", str(tmp_path / "a")]) == 2  # fmt: skip
    assert "image_size (32) sets the crops of folder:PATH data sets" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main(["train", "--dataset", f"folder:{missing}", *FOLDER_FLAGS, "--iterations", "1",
                 "--out", str(tmp_path / "b")]) == 2  # fmt: skip
    assert f"image folder {missing} cannot be used: it does not exist" in capsys.readouterr().err


def test_train_fit_and_lr_find_help_name_the_folder_flags(capsys):
    from superconv.cli import main

    for command in ("train", "fit", "lr-find"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "folder:PATH" in text and "--image-size" in text and "--tensorboard DIR" in text
