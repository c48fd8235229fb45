"""Plots write valid PNG images atomically, also from data with NaN/inf and exp-mode curves."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from superconv import plots
from superconv.range_test import RangeTestCurve
from superconv.suggest import Suggestion

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # something was drawn
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def _curve(mode):
    n = 60
    lrs = list(np.logspace(-4, 1, n)) if mode == "exp" else list(np.linspace(0, 3, n))
    losses = [2.0 - 0.02 * i for i in range(n - 2)] + [50.0, math.nan]  # blows up, then NaN
    smoothed = [2.0 - 0.02 * i for i in range(n - 2)] + [3.0, math.nan]
    steps = list(range(4, n, 5))
    return RangeTestCurve(
        lrs=lrs, losses=losses, smoothed_losses=smoothed, eval_steps=steps,
        eval_lrs=[lrs[s] for s in steps], val_losses=[1.5] * (len(steps) - 1) + [math.inf],
        val_accs=[0.5 + 0.03 * k for k in range(len(steps) - 1)] + [math.nan],
        stop_reason="non-finite train loss (nan) at step 59", mode=mode, num_steps=80,
    )  # fmt: skip


def _suggestion(curve):
    return Suggestion(max_lr=curve.lrs[40], min_lr_ratio=curve.lrs[40] / 4, min_lr_steepest=curve.lrs[10],
                      plateau=(curve.lrs[20], curve.lrs[45]), plateau_width=1.2, signal="val_acc",
                      reasons={})  # fmt: skip


def test_no_matplotlib_at_import_and_never_pyplot(tmp_path):
    # No work at import time; the Agg canvas is picked inside the functions, never via pyplot.
    code = (
        "import sys; import superconv.plots as p; assert 'matplotlib' not in sys.modules; "
        f"p.plot_schedule({{'lr': float}}, 5, {str(tmp_path / 's.png')!r}); "
        "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("mode", ["linear", "exp"])
@pytest.mark.parametrize("with_suggestion", [False, True])
def test_plot_range_test(tmp_path, mode, with_suggestion):
    curve = _curve(mode)
    suggestion = _suggestion(curve) if with_suggestion else None
    out = plots.plot_range_test(curve, suggestion, path=tmp_path / "rt.png")
    assert out == tmp_path / "rt.png"
    _assert_png(out)


def test_plot_range_test_without_validation_replaces_existing_file(tmp_path):
    curve = RangeTestCurve(lrs=[0.0, 0.1, 0.2, 0.3], losses=[1.0, 0.8, math.inf, math.nan],
                           smoothed_losses=[1.0, 0.9, math.nan, math.nan], num_steps=4)  # fmt: skip
    target = tmp_path / "rt.png"
    target.write_bytes(b"old contents")
    plots.plot_range_test(curve, path=target)
    _assert_png(target)


def test_plot_schedule(tmp_path):
    def lr(step):  # the paper's CLR triangle 0.1 -> 3 -> 0.1
        return 0.1 + 2.9 * (1 - abs(step - 50) / 50)

    def momentum(step):  # cycled inversely, 0.95 -> 0.85 -> 0.95
        return 0.95 - 0.1 * (lr(step) - 0.1) / 2.9

    _assert_png(plots.plot_schedule({"lr": lr, "momentum": momentum}, 100, tmp_path / "s.png"))
    _assert_png(
        plots.plot_schedule({"lr": lambda s: math.nan if s == 3 else 0.1}, 10, tmp_path / "t.png")
    )


def test_plot_estimates(tmp_path):
    series = {
        "constant 0.1": [(s, 1.0 + 0.1 * (s % 3), 1.0) for s in range(2, 50)]
        + [(50, math.inf, 1.0)],
        "CLR 0.1-3": [(s, math.nan if s == 7 else 2.0, 2.0) for s in range(2, 50)],
    }
    _assert_png(plots.plot_estimates(series, tmp_path / "e.png"))


@pytest.mark.parametrize("band", ["minmax", "std"])
def test_plot_curves(tmp_path, band):
    runs = {
        "1cycle": [{"iteration": i, "test_acc": 0.5 + 0.01 * i + 0.01 * seed, "seed": seed}
                   for seed in range(3) for i in range(0, 40, 5)],
        "piecewise": [{"iteration": i, "test_acc": None if i == 10 else 0.4 + 0.01 * i} for i in range(0, 40, 5)]
        + [{"iteration": 15, "test_acc": math.nan}, {"iteration": "", "test_acc": 0.3}],
    }  # fmt: skip
    _assert_png(plots.plot_curves(runs, "test_acc", path=tmp_path / "c.png", band=band))


def test_plot_by_size(tmp_path):
    series = {
        "1cycle": {10_000: [55.0, 56.0, 57.0], 45_000: [80.0, math.nan, 81.0]},
        "multistep": {10_000: [50.0], 20_000: [math.inf], 45_000: [75.0, 76.0]},
    }
    _assert_png(plots.plot_by_size(series, path=tmp_path / "s.png"))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: plots.plot_schedule({}, 10, p), "policy is empty"),
        (lambda p: plots.plot_schedule({"lr": float}, 0, p), "total_steps must be"),
        (lambda p: plots.plot_estimates({}, p), "series is empty"),
        (lambda p: plots.plot_curves({}, path=p), "runs is empty"),
        (lambda p: plots.plot_curves({"a": [{"iteration": 1, "acc": 1}]}, "test_acc", path=p),
         "no run has finite values of 'test_acc'"),
        (lambda p: plots.plot_curves({"a": []}, path=p, band="iqr"), "band must be one of"),
        (lambda p: plots.plot_by_size({}, path=p), "series is empty"),
        (lambda p: plots.plot_by_size({"a": {1000: [math.nan]}}, path=p), "no policy has a finite"),
    ],
)  # fmt: skip
def test_plot_bad_input(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_range_test_plot_names_the_evaluation_set(tmp_path, monkeypatch):
    """Fig. 2b evaluates on the test set: the legend must not call it validation."""
    import matplotlib.axes

    from superconv.plots import plot_range_test
    from superconv.range_test import RangeTestCurve

    curve = RangeTestCurve(
        lrs=[0.1, 0.2, 0.3],
        losses=[2.0, 1.9, 1.8],
        smoothed_losses=[2.0, 1.95, 1.9],
        eval_steps=[0, 2],
        eval_lrs=[0.1, 0.3],
        val_losses=[2.1, 1.9],
        val_accs=[0.2, 0.3],
        mode="linear",
        num_steps=3,
        stop_reason="completed",
    )
    labels = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    plot_range_test(curve, path=tmp_path / "a.png", eval_name="test")
    assert "test loss" in labels and "test accuracy" in labels
    assert not any(label and "validation" in label for label in labels)
    labels.clear()
    plot_range_test(curve, path=tmp_path / "b.png")
    assert "validation loss" in labels
    labels.clear()
    plot_range_test(curve, path=tmp_path / "c.png", eval_name="val")  # as range tests record it
    assert "validation loss" in labels and "validation accuracy" in labels


def test_one_wild_loss_does_not_flatten_the_range_test_plot(tmp_path, monkeypatch):
    import matplotlib.axes

    from superconv.plots import plot_range_test
    from superconv.range_test import RangeTestCurve

    n = 40
    curve = RangeTestCurve(
        lrs=[0.05 * i for i in range(n)],
        losses=[2.3 - 0.01 * i for i in range(n)],
        smoothed_losses=[2.3 - 0.01 * i for i in range(n)],
        eval_steps=list(range(0, n, 4)),
        eval_lrs=[0.05 * i for i in range(0, n, 4)],
        val_losses=[2.2, 4.5e8, 2.1, 2.0, 2.0, 1.9, 1.9, 1.8, 1.8, 1.7],
        val_accs=[0.1] * 10,
        num_steps=n,
    )
    limits, labels = [], []
    import matplotlib.figure

    real_ylim, real_legend = matplotlib.axes.Axes.set_ylim, matplotlib.figure.Figure.legend

    def ylim(self, *args, **kwargs):
        limits.append(args)
        return real_ylim(self, *args, **kwargs)

    def legend(self, handles, texts, **kwargs):
        labels.extend(texts)
        return real_legend(self, handles, texts, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylim", ylim)
    monkeypatch.setattr(matplotlib.figure.Figure, "legend", legend)  # below the axes
    plot_range_test(curve, path=tmp_path / "a.png")
    low, high = limits[0]
    assert low == 0.0 and 2.3 < high < 10  # the axis shows the ordinary losses
    assert "1 loss point(s) above the axis (max 4.5e+08)" in labels


def test_the_std_band_is_the_sample_std_as_in_the_report_tables():
    groups = [np.array([70.0, 72.0, 77.0]), np.array([50.0])]
    mean, low, high = plots.mean_band(groups, "std")
    assert mean == pytest.approx([73.0, 50.0])
    assert high - mean == pytest.approx([np.std(groups[0], ddof=1), 0.0])
    assert mean - low == pytest.approx(high - mean)
    _, low, high = plots.mean_band(groups, "minmax")
    assert list(low) == [70.0, 50.0] and list(high) == [77.0, 50.0]
