"""LR range test: synthetic tasks with known answers, exact state restore, and suggest()."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from superconv.range_test import RangeTestCurve, preserved_state, range_test
from superconv.suggest import Suggestion
from superconv.suggest import suggest as _suggest


def suggest(curve, rule="plateau_edge", budget=None, **kwargs):
    """These tests pin superconv 0.1's reading, the plateau edge, now a rule by name
    (the default is the suggestion benchmark's choice: tests/test_suggest.py)."""
    return _suggest(curve, rule, budget, **kwargs)


def _mse(out, target):
    return 0.5 * ((out.squeeze(-1) - target) ** 2).mean()


# ----------------------------------------------------------------------------- synthetic tasks
def _least_squares(L, *, n=256, d=10, batch=16, noise=0.1, seed=0):
    """Batches of a least-squares problem whose loss Hessian X^T X / n has spectrum [L/10, L]."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T  # now z^T z / n = I
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    x = (z @ torch.diag(torch.linspace(L / 10, L, d, dtype=torch.float64).sqrt()) @ q.T).float()
    y = x @ torch.randn(d, generator=g) + noise * torch.randn(n, generator=g)
    hessian = (x.double().T @ x.double()) / n
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)], hessian


def _blobs(seed, n=600, d=16, k=4):
    """Four well-separated Gaussian classes: train batches of 32 and one validation batch."""
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(k, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    train = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 384, 32)]
    return train, [(x[400:], y[400:])]


class _ResBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.f = nn.Sequential(
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width),
        )  # fmt: skip

    def forward(self, x):
        return torch.relu(x + self.f(x))


def _residual_bn_mlp(d=16, width=32, k=4):
    return nn.Sequential(
        nn.Linear(d, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
        _ResBlock(width), _ResBlock(width), nn.Linear(width, k),
    )  # fmt: skip


def _plain_mlp(d=16, width=32, k=4, depth=6):
    layers, dims = [], [d] + [width] * (depth - 1)
    for a, b in zip(dims[:-1], dims[1:]):
        lin = nn.Linear(a, b)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, k))


class _Counting:
    """An iterable over fixed batches that counts what was drawn (and can fail on a given draw)."""

    def __init__(self, batches, fail_at=None, error=RuntimeError):
        self.batches, self.fail_at, self.error = batches, fail_at, error
        self.drawn: list[int] = []
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        for i, batch in enumerate(self.batches):
            if self.fail_at is not None and len(self.drawn) == self.fail_at:
                raise self.error("loader failed on purpose")
            self.drawn.append(i)
            yield batch


def _linear_setup(seed=0, momentum=0.0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)


def _linear_batches(n_batches, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * batch, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n_batches * batch, generator=g)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("mode", ["linear", "exp"])
@pytest.mark.parametrize("L", [0.5, 4.0, 30.0])
def test_least_squares_max_lr_in_stable_band(L, mode):
    # Plain SGD on least squares is stable only below 2/L (L = largest Hessian eigenvalue);
    # the suggestion must lie in [0.5/L, 2/L]: usable, and not needlessly timid.
    batches, hessian = _least_squares(L)
    assert torch.linalg.eigvalsh(hessian).max().item() == pytest.approx(L, rel=1e-6)
    model = nn.Linear(10, 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start, end = (0.0, 6 / L) if mode == "linear" else (1e-3 / L, 10 / L)
    curve = range_test(model, opt, _mse, batches, start_lr=start, end_lr=end, num_steps=300,
                       mode=mode, progress=False)  # fmt: skip
    assert curve.stop_reason.startswith("diverged")  # the sweep crosses 2/L and blows up
    sug = suggest(curve)
    assert sug.signal == "train_loss" and "train loss" in sug.reasons["signal"]
    assert 0.5 / L <= sug.max_lr <= 2 / L
    assert sug.min_lr_ratio == pytest.approx(sug.max_lr / 4)
    assert 0 < sug.min_lr_steepest <= sug.max_lr


@pytest.mark.parametrize("seed", [0, 1])
def test_plateau_ranks_residual_bn_above_plain_deep_mlp(seed):
    # Paper Fig. 2b: a long plateau of high accuracy up to large LRs signals super-convergence.
    # A residual MLP with BN tolerates large LRs; a deep plain MLP without normalisation blows up.
    train, val = _blobs(seed)
    widths = {}
    for name, make in (("res", _residual_bn_mlp), ("plain", _plain_mlp)):
        torch.manual_seed(seed)
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        # the loss of separable data nears 0, so a bump is not divergence: stop on NaN only
        curve = range_test(model, opt, nn.functional.cross_entropy, train, val, start_lr=0.0,
                           end_lr=3.0, num_steps=150, eval_every=3, diverge_factor=math.inf,
                           progress=False)  # fmt: skip
        widths[name] = suggest(curve).plateau_width
    assert widths["res"] > widths["plain"] + 0.3, widths


# ----------------------------------------------------------------------------- loop behaviour
def _nan_after(calls):
    state = {"n": 0}

    def loss_fn(out, target):
        state["n"] += 1
        loss = _mse(out, target)
        return loss * math.nan if state["n"] > calls else loss

    return loss_fn


@pytest.mark.parametrize("sync_every", [1, 4, 50])
def test_nan_stops_with_reason_and_curve_does_not_depend_on_sync(sync_every):
    model, opt = _linear_setup()
    curve = range_test(model, opt, _nan_after(10), _linear_batches(4, 8), start_lr=0.0, end_lr=0.5,
                       num_steps=40, sync_every=sync_every, progress=False)  # fmt: skip
    assert (
        "non-finite" in curve.stop_reason
        and "nan" in curve.stop_reason
        and "step 10" in curve.stop_reason
    )
    assert len(curve.lrs) == len(curve.losses) == len(curve.smoothed_losses) == 11
    assert math.isnan(curve.losses[-1]) and all(math.isfinite(v) for v in curve.losses[:-1])
    reference = range_test(*_linear_setup(), _nan_after(10), _linear_batches(4, 8), start_lr=0.0,
                           end_lr=0.5, num_steps=40, sync_every=1, progress=False)  # fmt: skip
    assert curve.to_dict() == reference.to_dict()  # (NaN != NaN in a plain ==)


def test_smoothed_loss_and_divergence_rule_match_the_formula():
    # Losses 1, 1, ..., then x10 from step 20: bias-corrected EMA (beta 0.9); stop when > 4 x best.
    model, opt = _linear_setup()
    values = [1.0] * 20 + [10.0] * 40
    it = iter(values)

    def loss_fn(out, target):
        return _mse(out, target) * 0 + next(it)

    curve = range_test(model, opt, loss_fn, _linear_batches(2, 4), start_lr=0.0, end_lr=0.1,
                       num_steps=60, smooth_beta=0.9, progress=False)  # fmt: skip
    avg, smoothed = 0.0, []
    for i, v in enumerate(values):
        avg = 0.9 * avg + 0.1 * v
        smoothed.append(avg / (1 - 0.9 ** (i + 1)))
    grace = 6  # the best counts from min(1 / (1 - beta), num_steps / 10) = min(9, 6) steps on
    stop = next(i for i in range(grace, 60) if smoothed[i] > 4 * min(smoothed[grace : i + 1]))
    assert curve.stop_reason.startswith("diverged") and f"step {stop}" in curve.stop_reason
    assert curve.losses == values[: stop + 1]
    assert curve.smoothed_losses == pytest.approx(smoothed[: stop + 1], rel=1e-12)


def test_one_lucky_early_batch_does_not_stop_the_test():
    # First loss 0.1, then 1.0: the fastai rule (best from step 0) would stop at step 1,
    # since the bias-corrected EMA is then ~0.55 > 4 x 0.1.
    model, opt = _linear_setup()
    values = iter([0.1] + [1.0] * 99)

    def loss_fn(out, target):
        return _mse(out, target) * 0 + next(values)

    curve = range_test(model, opt, loss_fn, _linear_batches(2, 4), start_lr=0.0, end_lr=0.1,
                       num_steps=100, progress=False)  # fmt: skip
    assert curve.smoothed_losses[1] > 4 * 0.1
    assert curve.stop_reason == "completed" and len(curve.losses) == 100


def test_short_train_loader_cycles():
    loader = _Counting(_linear_batches(3, 4))
    range_test(
        *_linear_setup(), _mse, loader, start_lr=0.0, end_lr=0.1, num_steps=10, progress=False
    )
    assert loader.drawn == [0, 1, 2] * 3 + [0]
    assert loader.passes == 4


def test_validation_matches_direct_evaluation_and_never_runs_dry():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    xv, yv = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    val = _Counting([(xv[:4], yv[:4]), (xv[4:8], yv[4:8]), (xv[8:], yv[8:])])  # unequal sizes
    train = [
        (torch.randn(6, 3, generator=g), torch.randint(0, 2, (6,), generator=g)) for _ in range(2)
    ]
    direct = []

    def oracle(step, model, optimizer, metrics):  # full-batch eval-mode loss/acc, by hand
        if (step + 1) % 3 == 0:
            model.eval()
            with torch.no_grad():
                out = model(xv)
            model.train()
            direct.append(
                (
                    nn.functional.cross_entropy(out, yv).item(),
                    (out.argmax(1) == yv).float().mean().item(),
                )
            )

    curve = range_test(model, opt, nn.functional.cross_entropy, train, val, start_lr=0.0, end_lr=1.0,
                       num_steps=12, eval_every=3, progress=False, observers=[oracle])  # fmt: skip
    assert curve.eval_steps == [2, 5, 8, 11]
    assert curve.eval_lrs == [curve.lrs[s] for s in curve.eval_steps]
    assert curve.val_losses == pytest.approx([d[0] for d in direct], rel=1e-6)
    assert curve.val_accs == pytest.approx([d[1] for d in direct])
    assert len(val.drawn) == 4 * 3  # default: one full pass per evaluation

    val_small = _Counting([(xv[:4], yv[:4]), (xv[4:8], yv[4:8])])
    curve = range_test(model, opt, nn.functional.cross_entropy, train, val_small, start_lr=0.0,
                       end_lr=1.0, num_steps=12, eval_every=3, eval_batches=5, progress=False)  # fmt: skip
    assert len(curve.val_losses) == 4
    assert val_small.drawn == [0, 1, 0, 1, 0] * 4  # each evaluation: 5 batches, re-iterating


def test_gradient_accumulation_equals_big_batch():
    big = _linear_batches(5, 8, seed=3)
    micro = [(x[i : i + 2], y[i : i + 2]) for x, y in big for i in range(0, 8, 2)]
    kwargs = dict(start_lr=0.0, end_lr=0.5, num_steps=20, progress=False)
    a = range_test(*_linear_setup(momentum=0.9), _mse, big, **kwargs)
    b = range_test(*_linear_setup(momentum=0.9), _mse, micro, accumulation_steps=4, **kwargs)
    assert a.lrs == b.lrs
    assert b.losses == pytest.approx(a.losses, rel=1e-5)
    assert b.smoothed_losses == pytest.approx(a.smoothed_losses, rel=1e-5)


def test_mixed_precision_and_grad_scaler():
    batches = _linear_batches(4, 8)
    kwargs = dict(start_lr=0.0, end_lr=0.3, num_steps=15, progress=False)
    plain = range_test(*_linear_setup(), _mse, batches, **kwargs)
    # A GradScaler multiplies the loss and divides the gradients back: the same curve in fp32.
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaled = range_test(*_linear_setup(), _mse, batches, scaler=scaler, **kwargs)
    assert scaled.losses == pytest.approx(plain.losses, rel=1e-5)
    assert scaler.get_scale() == 1024.0  # restored afterwards
    # bf16 autocast rounds the forward pass (~3 significant digits): close, not equal.
    bf16 = range_test(*_linear_setup(), _mse, batches, autocast_dtype=torch.bfloat16, **kwargs)
    assert bf16.losses != plain.losses
    assert bf16.losses == pytest.approx(plain.losses, rel=0.05)


def test_exp_and_linear_spacing():
    curve = range_test(*_linear_setup(), _mse, _linear_batches(2, 4), start_lr=1e-4, end_lr=1.0,
                       num_steps=9, mode="exp", diverge_factor=math.inf, progress=False)  # fmt: skip
    assert curve.lrs == pytest.approx([1e-4 * 10 ** (i / 2) for i in range(9)], rel=1e-9)
    assert curve.mode == "exp" and curve.num_steps == 9
    curve = range_test(*_linear_setup(), _mse, _linear_batches(2, 4), start_lr=0.0, end_lr=3.0,
                       num_steps=7, diverge_factor=math.inf, progress=False)  # fmt: skip
    assert curve.lrs == pytest.approx([0.5 * i for i in range(7)])


def test_observers_see_every_step():
    seen = []
    range_test(*_linear_setup(), _mse, _linear_batches(2, 4), start_lr=0.0, end_lr=0.1, num_steps=5,
               progress=False, observers=[lambda s, m, o, metrics: seen.append((s, metrics["lr"], o.param_groups[0]["lr"]))])  # fmt: skip
    assert [s for s, _, _ in seen] == list(range(5))
    assert all(lr == group_lr for _, lr, group_lr in seen)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, "end_lr must be finite and > start_lr"),
        ({"start_lr": 2.0, "end_lr": 1.0}, "end_lr must be finite and > start_lr"),
        ({"start_lr": -0.1}, "start_lr must be a finite number >= 0"),
        ({"end_lr": math.inf}, "end_lr must be finite"),
        ({"mode": "exp", "start_lr": 0.0}, "needs start_lr > 0"),
        ({"mode": "cosine"}, "mode must be one of linear, exp"),
        ({"num_steps": 0}, "num_steps must be an integer >= 2"),
        ({"num_steps": 1}, "num_steps must be an integer >= 2"),
        ({"num_steps": 10.0}, "num_steps must be an integer >= 2"),
        ({"accumulation_steps": 0}, "accumulation_steps must be an integer >= 1"),
        ({"eval_every": 5}, "no val_loader"),
        ({"eval_batches": 0}, "eval_batches must be an integer >= 1"),
        ({"smooth_beta": 1.0}, r"smooth_beta must be in \[0, 1\)"),
        ({"diverge_factor": 1.0}, "diverge_factor must be > 1"),
        ({"autocast_dtype": torch.float64}, "autocast_dtype must be None"),
        ({"sync_every": 0}, "sync_every must be an integer >= 1"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    model, opt = _linear_setup()
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        range_test(model, opt, _mse, _linear_batches(2, 4), progress=False, **kwargs)
    assert opt.state_dict() == before


def test_empty_loaders_and_bad_batches_raise():
    with pytest.raises(ValueError, match="train_loader yielded no batches"):
        range_test(*_linear_setup(), _mse, [], progress=False)
    with pytest.raises(ValueError, match="val_loader yielded no batches"):
        range_test(*_linear_setup(), _mse, _linear_batches(2, 4), [], eval_every=1, progress=False)
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pairs"):
        range_test(*_linear_setup(), _mse, [torch.zeros(4, 3)], progress=False)


# ----------------------------------------------------------------------------- exact restore
def _state_fixture():
    """A model with BN + dropout, trained a little (momentum buffers exist), in eval mode, with grads."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Dropout(0.3), nn.Linear(6, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=1)
    for x, y in _linear_batches(3, 8):
        opt.zero_grad()
        scaler.scale(_mse(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    model.eval()
    np.random.seed(5)
    random.seed(5)
    return model, opt, scaler


def _snapshot(model, opt, scaler):
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "opt": copy.deepcopy(opt.state_dict()),
        "scaler": scaler.state_dict(),
        "rng": (torch.get_rng_state(), np.random.get_state(), random.getstate()),
    }


def _assert_identical(a, b):
    assert a["tensors"].keys() == b["tensors"].keys()
    assert all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])  # BN stats too
    assert all(
        (x is None and y is None) or torch.equal(x, y) for x, y in zip(a["grads"], b["grads"])
    )
    assert a["modes"] == b["modes"]
    assert a["opt"]["param_groups"] == b["opt"]["param_groups"]  # lr, momentum, ...
    assert a["opt"]["state"].keys() == b["opt"]["state"].keys()
    for k in a["opt"]["state"]:
        sa, sb = a["opt"]["state"][k], b["opt"]["state"][k]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)
    assert a["scaler"] == b["scaler"]
    assert torch.equal(a["rng"][0], b["rng"][0])
    na, nb = a["rng"][1], b["rng"][1]
    assert na[0] == nb[0] and np.array_equal(na[1], nb[1]) and na[2:] == nb[2:]
    assert a["rng"][2] == b["rng"][2]


class _RandomLoader:
    """Draws from numpy's and Python's global RNGs, so the test must restore them."""

    def __init__(self, fail_at=None, error=RuntimeError):
        self.inner = _Counting(_linear_batches(3, 8), fail_at, error)

    def __iter__(self):
        for batch in self.inner:
            np.random.rand()
            random.random()
            yield batch


@pytest.mark.parametrize("error", [None, RuntimeError, KeyboardInterrupt])
def test_state_restored_bit_identically(error):
    model, opt, scaler = _state_fixture()
    before = _snapshot(model, opt, scaler)
    loader = _RandomLoader(fail_at=None if error is None else 7, error=error or RuntimeError)
    kwargs = dict(start_lr=0.0, end_lr=0.2, num_steps=12, scaler=scaler, progress=False)
    if error is None:
        curve = range_test(model, opt, _mse, loader, loader, eval_every=4, **kwargs)
        assert curve.stop_reason == "completed"
    else:
        with pytest.raises(error, match="on purpose"):
            range_test(model, opt, _mse, loader, **kwargs)
    assert len(loader.inner.drawn) >= 7  # it did train (and draw random numbers) before ending
    _assert_identical(before, _snapshot(model, opt, scaler))


def test_preserved_state_restores_in_place():
    model, opt, scaler = _state_fixture()
    weight, group = model[0].weight, opt.param_groups[0]
    before = _snapshot(model, opt, scaler)
    with preserved_state(model, opt, scaler):
        with torch.no_grad():
            weight.mul_(3)
        model[1].running_mean.add_(1)
        group["lr"], group["momentum"] = 9.0, 0.1
        opt.state.clear()
        torch.rand(3)
        np.random.rand()
        random.random()
        model.train()
    _assert_identical(before, _snapshot(model, opt, scaler))
    assert model[0].weight is weight and opt.param_groups[0] is group  # same objects, new values


# ----------------------------------------------------------------------------- curve records
def test_curve_json_round_trip_with_nan():
    curve = RangeTestCurve(lrs=[0.0, 0.1], losses=[1.0, math.nan], smoothed_losses=[1.0, math.inf],
                           eval_steps=[1], eval_lrs=[0.1], val_losses=[0.5], val_accs=[math.nan],
                           stop_reason="non-finite train loss (nan)", mode="linear", num_steps=5)  # fmt: skip
    text = json.dumps(curve.to_dict(), allow_nan=False)  # strict JSON
    back = RangeTestCurve.from_dict(json.loads(text))
    assert (
        back.lrs == curve.lrs and back.eval_steps == [1] and back.stop_reason == curve.stop_reason
    )
    assert (
        math.isnan(back.losses[1])
        and math.isnan(back.smoothed_losses[1])
        and math.isnan(back.val_accs[0])
    )
    with pytest.raises(ValueError, match="unknown keys"):
        RangeTestCurve.from_dict({"lrs": [], "bogus": 1})


# ----------------------------------------------------------------------------- suggest()
def _acc_curve(acc_of_lr, lrs, noise=0.0, seed=0, num_steps=None):
    """A curve evaluated at every LR in ``lrs`` with accuracy ``acc_of_lr`` (+ seeded noise)."""
    rng = np.random.default_rng(seed)
    accs = [float(acc_of_lr(lr) + noise * rng.standard_normal()) for lr in lrs]
    n = len(lrs)
    return RangeTestCurve(lrs=list(lrs), losses=[1.0 / (1 + i) for i in range(n)],
                          smoothed_losses=[1.0 / (1 + i) for i in range(n)], eval_steps=list(range(n)),
                          eval_lrs=list(lrs), val_losses=[1.0] * n, val_accs=accs, mode="exp",
                          num_steps=n)  # fmt: skip


def _plateau_acc(lr):
    """Accuracy 0.1 (chance) rising to 0.9 by 1e-2, flat to 1, falling to 0.1 at 10 (log-linear)."""
    u = math.log10(lr)
    if u < -3:
        return 0.1
    if u < -2:
        return 0.1 + 0.8 * (u + 3)
    if u <= 0:
        return 0.9
    return max(0.1, 0.9 - 0.8 * u)


def test_suggest_known_plateau_closed_form_and_noise():
    lrs = list(np.logspace(-4, 1, 501))  # 0.01 decades apart
    # Tolerance 10% of the range (0.1 .. 0.9): plateau where acc >= 0.82, i.e. log10(lr) in
    # [-2.1, 0.1] by the closed form of _plateau_acc; max_lr is its upper end.
    exact = suggest(_acc_curve(_plateau_acc, lrs), burn_in=0, smooth_window=1)
    assert exact.signal == "val_acc"
    assert math.log10(exact.plateau[0]) == pytest.approx(-2.1, abs=0.011)
    assert math.log10(exact.plateau[1]) == pytest.approx(0.1, abs=0.011)
    assert exact.plateau_width == pytest.approx(2.2, abs=0.021)
    assert exact.max_lr == exact.plateau[1]
    # Default smoothing (a window of 51 points = 0.5 decades) rounds the corners a little;
    # with seeded noise the answer stays within 0.1 decades of the closed form.
    for noise, seed in ((0.0, 0), (0.03, 0), (0.03, 1), (0.03, 2)):
        sug = suggest(_acc_curve(_plateau_acc, lrs, noise=noise, seed=seed), burn_in=0)
        assert math.log10(sug.max_lr) == pytest.approx(0.1, abs=0.1)
        assert math.log10(sug.plateau[0]) == pytest.approx(-2.1, abs=0.1)
    # without smoothing the same noise breaks the plateau: smoothing is what makes it robust
    raw = suggest(_acc_curve(_plateau_acc, lrs, noise=0.03, seed=0), burn_in=0, smooth_window=1)
    assert raw.plateau_width < 2.2 - 0.5


def test_suggest_peak_is_narrower_than_plateau_and_reasons():
    lrs = list(np.logspace(-4, 1, 201))

    def triangle(lr):  # Fig. 2a: a distinct peak at 10^-1.5; >= 0.82 only within +-0.15 decades
        return 0.9 - 0.8 * min(1.0, abs(math.log10(lr) + 1.5) / 1.5)

    assert suggest(
        _acc_curve(triangle, lrs), burn_in=0, smooth_window=1
    ).plateau_width == pytest.approx(0.3, abs=0.03)
    peak = suggest(_acc_curve(triangle, lrs), burn_in=0)
    wide = suggest(_acc_curve(_plateau_acc, lrs), burn_in=0)
    assert (
        peak.plateau_width < 1.0 < 2.0 < wide.plateau_width
    )  # smoothing widens a sharp peak a bit
    assert math.log10(peak.max_lr) == pytest.approx(-1.5, abs=0.3)  # just past the peak
    assert peak.min_lr_ratio == peak.max_lr / 4 == peak.min_lr
    assert f"{peak.max_lr / 3:.4g}" in peak.reasons["min_lr_ratio"]
    assert set(peak.reasons) == {
        "signal", "max_lr", "min_lr_ratio", "min_lr_steepest", "plateau", "safe_max_lr"
    }
    assert "validation accuracy" in peak.reasons["signal"]
    assert json.loads(json.dumps(peak.to_dict()))["plateau"] == list(peak.plateau)
    assert isinstance(peak, Suggestion)


def test_suggest_ignores_burn_in():
    lrs = list(np.logspace(-4, 1, 200))
    # a spurious perfect score in the first 5% (10 steps) would otherwise be the peak
    curve = _acc_curve(lambda lr: 1.0 if lr < 1.7e-4 else _plateau_acc(lr), lrs)
    assert sum(lr < 1.7e-4 for lr in lrs) == 10
    assert suggest(curve, smooth_window=1).plateau[0] > 1e-3
    assert suggest(curve, burn_in=0, smooth_window=1).plateau[0] == lrs[0]
    assert (
        suggest(curve, burn_in=10, smooth_window=1).plateau
        == suggest(curve, smooth_window=1).plateau
    )


def test_suggest_steepest_descent_of_train_loss():
    # log loss = -2 tanh((step - 80) / 15) until step 150, then rising: steepest descent at step 80.
    n, lrs = 200, list(np.linspace(0, 2.0, 200))
    log_loss = [
        -2 * math.tanh((s - 80) / 15) + (0.05 * (s - 150) ** 2 if s > 150 else 0) for s in range(n)
    ]
    curve = RangeTestCurve(lrs=lrs, losses=[math.exp(v) for v in log_loss],
                           smoothed_losses=[math.exp(v) for v in log_loss], num_steps=n)  # fmt: skip
    sug = suggest(curve)
    assert sug.signal == "train_loss"
    assert sug.min_lr_steepest == pytest.approx(lrs[80], abs=lrs[2])
    # the loss minimum; the centred window (21 points) meets the rise up to 10 steps early
    assert lrs[140] <= sug.max_lr <= lrs[150]
    assert "step 80" in sug.reasons["min_lr_steepest"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"burn_in": -1}, "burn_in must be"),
        ({"burn_in": 1.0}, "fraction must be < 1"),
        ({"smooth_window": 0}, "smooth_window must be an integer >= 1"),
        ({"tolerance": 0.0}, r"tolerance must be in \(0, 1\)"),
    ],
)
def test_suggest_bad_parameters(kwargs, match):
    curve = _acc_curve(_plateau_acc, list(np.logspace(-4, 1, 50)))
    with pytest.raises(ValueError, match=match):
        suggest(curve, **kwargs)


def test_suggest_too_short_curve():
    curve = RangeTestCurve(lrs=[0.0, 0.1, 0.2], losses=[1.0, 0.9, math.nan],
                           smoothed_losses=[1.0, 0.9, math.nan], num_steps=3)  # fmt: skip
    with pytest.raises(ValueError, match="a suggestion needs at least 3"):
        suggest(curve)


def test_a_test_that_breaks_down_early_restarts_below_it(tmp_path):
    """LeNet on mnist-demo with the paper's linear 0 -> 3: NaN within a few steps, inside the
    burn-in, so no rule could read it; the adaptive test restarts with an exp ramp below that
    LR and says so, and the curve gives a suggestion."""
    from superconv.demo import lr_find
    from superconv.train import TrainConfig

    config = TrainConfig(
        model="lenet", dataset="mnist-demo", batch_size=64, normalize="unit", flip=False,
        val_size=1000, threads=1,
    )
    plain = lr_find(config, tmp_path / "plain", num_steps=120, eval_every=10, eval_batches=1,
                    progress=False, adapt=False)
    assert plain.curve.stop_reason != "completed" and len(plain.curve.losses) < 24
    adapted = lr_find(config, tmp_path / "adapted", num_steps=120, eval_every=10,
                      eval_batches=1, progress=False)
    curve = adapted.curve
    assert len(curve.notes) >= 1 and "restarted with an exp ramp" in curve.notes[0]
    assert curve.mode == "exp" and len(curve.losses) >= 24
    assert curve.steps_run == len(plain.curve.losses) * len(curve.notes) + len(curve.losses) or (
        len(curve.notes) > 1 and curve.steps_run > len(curve.losses)
    )
    stop_lr = plain.curve.lrs[-1]
    assert curve.lrs[-1] <= stop_lr * (1 + 1e-9)  # the restart ends at or below the breakdown
    assert adapted.suggestion is not None and adapted.suggestion.max_lr < stop_lr
    record = json.loads((tmp_path / "adapted" / "range_test.json").read_text())
    assert record["curve"]["notes"] == curve.notes and "steepest" in record["rules"]
    assert RangeTestCurve.from_dict(record["curve"]).notes == curve.notes
