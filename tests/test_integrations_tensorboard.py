"""TensorBoard logging (issue 25, item 4): written through torch's SummaryWriter, read back.

Skipped, by name, without the tensorboard package (``pip install 'superconv[tensorboard]'``).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "tensorboard", reason="tensorboard not installed: pip install 'superconv[tensorboard]'"
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from superconv.errors import UserError  # noqa: E402
from superconv.integrations.tensorboard import TensorBoardLogger  # noqa: E402
from superconv.range_test import RangeTestCurve, range_test  # noqa: E402
from superconv.suggest import suggest  # noqa: E402


def read(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_range_test_curve_and_suggestion_read_back(tmp_path):
    lrs = [1e-3 * 1.15**i for i in range(60)]
    losses = [2.0 - 0.02 * i if i < 40 else 1.2 + 0.3 * (i - 40) for i in range(60)]
    curve = RangeTestCurve(
        lrs=lrs, losses=losses, smoothed_losses=losses, num_steps=60, mode="exp",
        eval_steps=[9, 19], eval_lrs=[lrs[9], lrs[19]], val_losses=[1.5, 1.4], val_accs=[0.5, 0.6],
    )  # fmt: skip
    s = suggest(curve, "loss_edge")
    with TensorBoardLogger(tmp_path / "tb") as tb:
        tb.log_range_test(curve, s)
    events = read(tmp_path / "tb")
    loss = scalars(events, "range_test/loss")
    assert [step for step, _ in loss] == list(range(60))
    assert [v for _, v in loss] == pytest.approx(losses, rel=1e-6)  # stored as float32
    assert [v for _, v in scalars(events, "range_test/lr")] == pytest.approx(lrs, rel=1e-6)
    assert scalars(events, "range_test/val_acc") == [(9, 0.5), (19, pytest.approx(0.6))]
    (max_lr,) = scalars(events, "range_test/suggestion/max_lr")
    assert max_lr[1] == pytest.approx(s.max_lr, rel=1e-6)
    (text,) = events.Tensors("range_test/suggestion/text_summary")  # the reason, as text
    assert text.tensor_proto.string_val[0].decode().startswith("rule loss_edge: max_lr")


def test_as_an_observer_of_the_range_test(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = [(torch.randn(8, 3), torch.randn(8, 1)) for _ in range(4)]
    with TensorBoardLogger(tmp_path / "tb", every=5) as tb:
        curve = range_test(
            model, opt, torch.nn.functional.mse_loss, data, num_steps=20, progress=False,
            observers=[tb],
        )  # fmt: skip
    lr = scalars(read(tmp_path / "tb"), "train/lr")
    assert [step for step, _ in lr] == [0, 5, 10, 15][: len(range(0, len(curve.lrs), 5))]
    assert [v for _, v in lr] == pytest.approx(curve.lrs[::5], rel=1e-6)


def test_bad_settings_say_what_is_wrong(tmp_path):
    with pytest.raises(UserError, match="every must be an integer >= 1, got 0"):
        TensorBoardLogger(tmp_path, every=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        UserError, match="cannot write TensorBoard logs to .*file/tb.*Choose a folder"
    ):
        TensorBoardLogger(tmp_path / "file" / "tb")


# ----------------------------------------------------------------------------- the CLI
# LeNet on the bundled MNIST subset, a handful of iterations (as tests/helpers.py's DATA).
MNIST = [
    "--model", "lenet", "--dataset", "mnist-demo", "--normalize", "unit", "--no-flip",
    "--batch-size", "32", "--eval-batch-size", "500", "--val-size", "500", "--device", "cpu",
    "--threads", "1", "--no-progress",
]  # fmt: skip


def test_lr_find_logs_its_curve_and_suggestion(tmp_path, capsys):
    from superconv.cli import main

    tb = tmp_path / "tb"
    args = ["lr-find", *MNIST, "--steps", "30", "--mode", "exp", "--start-lr", "1e-4",
            "--eval-every", "10", "--out", str(tmp_path / "find"), "--tensorboard", str(tb)]  # fmt: skip
    assert main(args) == 0
    record = __import__("json").loads((tmp_path / "find" / "range_test.json").read_text())
    events = read(tb)
    loss = scalars(events, "range_test/loss")
    assert [s for s, _ in loss] == list(range(len(record["curve"]["losses"])))
    assert [v for _, v in loss] == pytest.approx(record["curve"]["losses"], rel=1e-6)
    assert [s for s, _ in scalars(events, "range_test/val_loss")] == record["curve"]["eval_steps"]
    if record["suggestion"] is not None:
        (max_lr,) = scalars(events, "range_test/suggestion/max_lr")
        assert max_lr[1] == pytest.approx(record["suggestion"]["max_lr"], rel=1e-6)


def test_train_logs_loss_lr_and_metrics_rows(tmp_path):
    from superconv.cli import main
    from superconv.records import read_csv

    tb, run = tmp_path / "tb", tmp_path / "run"
    args = ["train", *MNIST, "--iterations", "12", "--eval-every", "6", "--checkpoint-every", "6",
            "--log-every", "3", "--policy", "one_cycle", "--policy-param", "max_lr=0.05",
            "--out", str(run), "--tensorboard", str(tb)]  # fmt: skip
    assert main(args) == 0
    events = read(tb)
    rows = read_csv(run / "metrics.csv")
    assert [s for s, _ in scalars(events, "metrics/test_acc")] == [r["iteration"] for r in rows]
    assert [v for _, v in scalars(events, "metrics/test_acc")] == pytest.approx(
        [r["test_acc"] for r in rows], rel=1e-6
    )
    lr = scalars(events, "train/lr")
    assert [s for s, _ in lr] == [0, 3, 6, 9]
    assert [v for _, v in scalars(events, "train/momentum")][0] == pytest.approx(0.95)
    assert len(scalars(events, "train/loss")) == 4


def test_fit_logs_its_range_test_run_and_choice(tmp_path):
    from superconv.cli import main

    tb, out = tmp_path / "tb", tmp_path / "fit"
    args = ["fit", *MNIST, "--iterations", "100", "--range-steps", "10", "--no-verify",
            "--out", str(out), "--tensorboard", str(tb)]  # fmt: skip
    assert main(args) == 0
    fit_record = __import__("json").loads((out / "fit.json").read_text())
    events = read(tb)
    (curve,) = fit_record["phases"]["range_test"]["curves"]
    logged = scalars(events, "range_test/seed0/loss")
    assert [v for _, v in logged] == pytest.approx(curve["losses"], rel=1e-6)
    (chosen,) = scalars(events, "fit/max_lr")
    assert chosen[1] == pytest.approx(fit_record["max_lr"], rel=1e-6)
    assert [s for s, _ in scalars(events, "metrics/val_acc")][-1] == 100


def test_a_missing_tensorboard_package_names_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    from superconv.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    args = ["lr-find", *MNIST, "--steps", "20", "--out", str(tmp_path / "find"),
            "--tensorboard", str(tmp_path / "tb")]  # fmt: skip
    assert main(args) == 2
    assert "pip install 'superconv[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "find").exists()  # refused before any work


def test_the_fit_api_logs_to_a_tensorboard_folder(tmp_path):
    from superconv.fit import fit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=32, shuffle=True
    )
    result = fit(torch.nn.Linear(8, 2), data, iterations=100, verify=False,
                 tensorboard=tmp_path / "tb", echo=lambda s: None)  # fmt: skip
    events = read(tmp_path / "tb")
    rows = result.summary["metrics"]
    assert [s for s, _ in scalars(events, "metrics/val_loss")] == [r["iteration"] for r in rows]
    (chosen,) = scalars(events, "fit/max_lr")
    assert chosen[1] == pytest.approx(result.max_lr, rel=1e-6)
    assert scalars(events, "range_test/seed0/lr")
    with pytest.raises(UserError, match="give tensorboard= .* or logger=, not both"):
        fit(torch.nn.Linear(8, 2), data, iterations=100, verify=False, echo=lambda s: None,
            tensorboard=tmp_path / "a", logger=object())  # fmt: skip
