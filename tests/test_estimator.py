"""Eq. 8 (Hessian-free LR estimate) against closed forms and a slow pure-Python reference."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from superconv.estimator import LREstimator, estimate_lr


# ----------------------------------------------------------------------------- helpers
def _quadratic_run(h, lrs, k, dim=5, norm="l1"):
    """Plain SGD on f(x) = h/2 ||x||^2 in float64, LR ``lrs[t]`` at step t; returns the history."""
    x = nn.Parameter(torch.linspace(-1.0, 2.0, dim, dtype=torch.float64))
    model = nn.ParameterList([x])
    opt = torch.optim.SGD([x], lr=1.0)
    # torch's own LambdaLR sets the LR of step t (the test needs no schedule of ours).
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lrs[min(t, len(lrs) - 1)])
    est = LREstimator(k=k, norm=norm)
    for step in range(len(lrs)):
        opt.zero_grad()
        (0.5 * h * (x * x).sum()).backward()
        opt.step()
        est(step, model, opt, {})
        sched.step()
    return est.history


def _ema(raws, beta=0.1):
    """Paper section 5: LR <- beta est + (1 - beta) LR, started at the first finite estimate."""
    out, lr = [], None
    for r in raws:
        if math.isfinite(r):
            lr = r if lr is None else beta * r + (1 - beta) * lr
        out.append(math.inf if lr is None else lr)
    return out


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _train_small(model, steps, observers):
    """A few SGD-momentum steps with a varying LR; returns per-step (lr, trainable weights as floats)."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.2 + 0.05 * (t % 7))
    record = []
    for step in range(steps):
        idx = torch.randint(0, 64, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        for obs in observers:
            obs(step, model, opt, {})
        flat = [
            float(v)
            for p in model.parameters()
            if p.requires_grad
            for v in p.detach().reshape(-1).tolist()
        ]
        record.append((opt.param_groups[0]["lr"], flat))
        sched.step()
    return record


def _slow_reference(record, k, norm, beta=0.1):
    """Obviously-correct eq. 8 with Python floats and loops over every weight."""
    snaps, lr_sums, acc, out, smoothed = [], [], 0.0, [], None
    for call, (lr, weights) in enumerate(record):
        if call == 0:
            snaps.append(weights)
            continue
        acc += lr
        if call % k:
            continue
        snaps.append(weights)
        lr_sums.append(acc)
        acc = 0.0
        if len(snaps) < 3:
            continue
        a, b, c = snaps[-3], snaps[-2], snaps[-1]
        num = den = 0.0
        for wa, wb, wc in zip(a, b, c):
            if norm == "l1":
                num += abs(wb - wa)
                den += abs(2 * wb - wa - wc)
            else:
                num += (wb - wa) ** 2
                den += (2 * wb - wa - wc) ** 2
        if norm == "l2":
            num, den = math.sqrt(num), math.sqrt(den)
        raw = lr_sums[-2] * num / den  # the LRs that took a to b
        smoothed = raw if smoothed is None else beta * raw + (1 - beta) * smoothed
        out.append((call, raw, smoothed))
    return out


# ----------------------------------------------------------------------------- the pure formula
@pytest.mark.parametrize("h", [0.5, 3.0, 40.0])
@pytest.mark.parametrize("lr", [0.001, 0.1, 0.7])
def test_pure_formula_is_one_over_h_on_quadratic(h, lr):
    x0 = torch.tensor([1.0, -3.0, 0.25], dtype=torch.float64)
    x1 = (1 - lr * h) * x0
    x2 = (1 - lr * h) * x1
    for norm in ("l1", "l2"):
        assert estimate_lr(x0, x1, x2, lr, norm=norm) == pytest.approx(1 / h, rel=1e-9)
    # the same snapshots given as per-parameter sequences
    split = [(t[:1], t[1:]) for t in (x0, x1, x2)]
    assert estimate_lr(*split, lr) == pytest.approx(1 / h, rel=1e-9)


def test_pure_formula_by_hand_and_zero_denominator():
    a = torch.tensor([0.0, 0.0])
    b = torch.tensor([1.0, -1.0])
    c = torch.tensor([1.5, -3.0])
    # num = 1 + 1 = 2; 2b - a - c = (0.5, 1) -> den 1.5; sqrt variant: sqrt(2) / sqrt(1.25)
    assert estimate_lr(a, b, c, 0.3) == pytest.approx(0.3 * 2 / 1.5)
    assert estimate_lr(a, b, c, 0.3, norm="l2") == pytest.approx(
        0.3 * math.sqrt(2) / math.sqrt(1.25)
    )
    # constant-speed straight line: 2b - a - c = 0 -> inf, documented, not an exception
    assert estimate_lr(a, b, 2 * b, 0.1) == math.inf
    assert estimate_lr(a, a, a, 0.1) == math.inf


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.1, "l3"), "norm must be one of l1, l2"),
        ((torch.zeros(2), torch.zeros(2), torch.zeros(2), -0.1), "lr_used must be a finite"),
        ((torch.zeros(2), torch.zeros(2), torch.zeros(2), math.nan), "lr_used must be a finite"),
        ((torch.zeros(2), torch.zeros(3), torch.zeros(2), 0.1), "same number of elements"),
        (([], [], [], 0.1), "empty sequence"),
    ],
)
def test_pure_formula_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        estimate_lr(*args)


# ----------------------------------------------------------------------------- observer: closed forms
@pytest.mark.parametrize("h", [0.5, 4.0])
@pytest.mark.parametrize("lr", [0.003, 0.1, 0.45])
def test_observer_k1_is_exactly_one_over_h(h, lr):
    hist = _quadratic_run(h, [lr] * 12, k=1)
    assert [s for s, _, _ in hist] == list(range(2, 12))  # first snapshot at step 0
    for _, raw, smoothed in hist:
        assert raw == pytest.approx(1 / h, rel=1e-9)
        assert smoothed == pytest.approx(1 / h, rel=1e-9)


@pytest.mark.parametrize("lr, h", [(0.001, 1.0), (0.0004, 5.0), (0.01, 1.0), (0.05, 2.0)])
def test_observer_k10_matches_closed_form(lr, h):
    # Snapshots 10 plain-SGD steps apart: d1 = (r - 1) x, d2 = r (r - 1) x with r = (1 - lr h)^10,
    # 2 theta_b - theta_a - theta_c = -(1 - r)^2 x and lr_used = 10 lr, so eq. 8 gives
    # 10 lr / (1 - r) = (1/h) (1 + 9 lr h / 2 + O((lr h)^2)).
    hist = _quadratic_run(h, [lr] * 45, k=10)
    assert [s for s, _, _ in hist] == [20, 30, 40]
    closed = 10 * lr / (1 - (1 - lr * h) ** 10)
    for _, raw, _ in hist:
        assert raw == pytest.approx(closed, rel=1e-9)
        if lr * h <= 0.002:  # within 1% of 1/h only for lr h <= ~0.002 (4.6% off at 0.01)
            assert raw == pytest.approx(1 / h, rel=0.01)


def test_observer_varying_lr_closed_form_and_ema():
    # k=1, LRs l0 then l1: eq. 8 with the numerator step's LR gives l0^2 / |l0 - l1 + l0 l1 h|;
    # both zero (weights did not move twice) -> 0/0 -> inf, which leaves the EMA unchanged.
    h = 2.0
    lrs = [0.1, 0.1, 0.3, 0.05, 0.0, 0.0, 0.2, 0.25, 0.25, 0.4]
    hist = _quadratic_run(h, lrs, k=1)
    raws = []
    for l0, l1 in zip(lrs[1:], lrs[2:]):
        den = abs(l0 - l1 + l0 * l1 * h)
        raws.append(math.inf if den == 0 else l0 * l0 / den)
    assert math.inf in raws
    assert [r for _, r, _ in hist] == pytest.approx(raws, rel=1e-9)
    assert [s for _, _, s in hist] == pytest.approx(_ema(raws), rel=1e-9)


# ----------------------------------------------------------------------------- observer: slow reference
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("k", [1, 10])
def test_observer_equals_slow_reference(k, norm):
    model = _small_net()
    est = LREstimator(k=k, norm=norm)
    record = _train_small(model, 45, [est])
    expected = _slow_reference(record, k, norm)
    got = est.history
    assert len(got) == len(expected) == (43 if k == 1 else 3)
    assert [s for s, _, _ in got] == [s for s, _, _ in expected]
    for (_, raw, sm), (_, eraw, esm) in zip(got, expected):
        assert raw == pytest.approx(eraw, rel=1e-5)
        assert sm == pytest.approx(esm, rel=1e-5)


def test_observer_excludes_bn_running_stats_and_frozen_weights():
    # f = h/2 ||x||^2 on the trainable x; a BatchNorm (running stats move every step) and a
    # frozen parameter that we change every step ride along. Including them would break 1/h.
    h, lr = 3.0, 0.05
    x = nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))
    bn = nn.BatchNorm1d(4, affine=False).double()
    frozen = nn.Parameter(torch.zeros(4, dtype=torch.float64), requires_grad=False)
    model = nn.ModuleDict({"bn": bn, "p": nn.ParameterList([x, frozen])})
    opt = torch.optim.SGD([x], lr=lr)
    est = LREstimator(k=1)
    gen = torch.Generator().manual_seed(0)
    for step in range(8):
        bn(torch.randn(16, 4, generator=gen, dtype=torch.float64) * (step + 1))
        with torch.no_grad():
            frozen.add_(float(step) ** 2)
        opt.zero_grad()
        (0.5 * h * (x * x).sum()).backward()
        opt.step()
        est(step, model, opt, {})
    assert est.history and all(r == pytest.approx(1 / h, rel=1e-9) for _, r, _ in est.history)


# ----------------------------------------------------------------------------- observer: resume
@pytest.mark.parametrize("k, split", [(1, 13), (10, 25), (10, 20)])
def test_state_dict_resume_continues_identically(k, split):
    whole = LREstimator(k=k)
    first, second = LREstimator(k=k), LREstimator(k=k)

    class Switch:  # feeds `first` before the split and a restored `second` after it
        def __call__(self, step, model, opt, metrics):
            if step == split:
                buf = io.BytesIO()
                torch.save(first.state_dict(), buf)
                buf.seek(0)
                second.load_state_dict(torch.load(buf, weights_only=True))
            (first if step < split else second)(step, model, opt, metrics)

    _train_small(_small_net(), 45, [whole, Switch()])
    assert whole.history and second.history == whole.history


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k .* must be an integer >= 1"),
        ({"k": 2.5}, "k .* must be an integer >= 1"),
        ({"beta": 0.0}, r"beta .* must be in \(0, 1\]"),
        ({"beta": 1.5}, r"beta .* must be in \(0, 1\]"),
        ({"norm": "max"}, "norm must be one of"),
    ],
)
def test_observer_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LREstimator(**kwargs)


def test_observer_refuses_foreign_state_and_changed_model():
    state = LREstimator(k=10).state_dict()
    with pytest.raises(ValueError, match="saved with"):
        LREstimator(k=1).load_state_dict(state)
    est = LREstimator()
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    est(0, nn.Linear(2, 2), opt, {})
    with pytest.raises(ValueError, match="changed size"):
        est(1, nn.Linear(3, 2), opt, {})
    with pytest.raises(ValueError, match="no trainable parameters"):
        LREstimator()(0, nn.BatchNorm1d(3, affine=False), opt, {})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_observer_makes_no_host_sync_per_step_on_cuda():
    model = _small_net().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(k=1)
    x = torch.randn(16, 4, device="cuda")
    for step in range(3):  # warm-up outside the check
        est(step, model, opt, {})
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(3, 20):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
            est(step, model, opt, {})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(est.history) == 18 and all(math.isfinite(r) for _, r, _ in est.history)
