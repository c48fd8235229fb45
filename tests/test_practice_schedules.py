"""Schedules of current practice (issue 25, item 5) and the LR carry rules.

Oracles: torch's ``PolynomialLR`` and ``LinearLR``, and transformers' schedule
factories (skipped by name where transformers is missing); hand-computed values.
Convention (see superconv.schedules): ours reach the end value at step
``total_steps - 1``, theirs at ``num_training_steps``, so we compare with
``num_training_steps = total_steps - 1``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from superconv import schedules as S
from superconv.errors import UserError
from superconv.scaling import carry_lr, global_batch

MAX_LR = 0.3


def _oracle_lrs(make_scheduler, steps: int, lr: float = MAX_LR) -> list[float]:
    """The LR torch's (or transformers') scheduler sets at steps 0..steps-1."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _ours(schedule, steps: int) -> list[float]:
    return [schedule(t) for t in range(steps)]


def _close(a: list[float], b: list[float], rel: float = 1e-9) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-15), (t, x, y)


@pytest.mark.parametrize("power", [1.0, 0.9, 2.0])
def test_polynomial_equals_torch_polynomial_lr(power):
    total = 57
    ours = S.Polynomial(MAX_LR, total, power=power)
    theirs = _oracle_lrs(
        lambda o: torch_sched.PolynomialLR(o, total_iters=total - 1, power=power), total + 5
    )
    _close(_ours(ours, total + 5), theirs)  # and both hold 0 past the end
    assert ours(total - 1) == 0.0


def test_linear_decay_without_warmup_equals_torch_linear_lr():
    total = 40
    ours = S.LinearDecay(MAX_LR, total, min_lr=MAX_LR * 0.1)
    theirs = _oracle_lrs(
        lambda o: torch_sched.LinearLR(o, 1.0, 0.1, total_iters=total - 1), total + 3
    )
    _close(_ours(ours, total + 3), theirs)


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip(
        "transformers.optimization",
        reason="transformers not installed: pip install superconv[hf]",
    )


@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_linear_decay_equals_transformers_linear_schedule(hf, warmup):
    total = 50
    theirs = _oracle_lrs(lambda o: hf.get_linear_schedule_with_warmup(o, warmup, total - 1), total)
    _close(_ours(S.LinearDecay(MAX_LR, total, warmup_steps=warmup), total), theirs)


@pytest.mark.parametrize("power", [1.0, 0.5, 3.0])
def test_polynomial_with_warmup_equals_transformers(hf, power):
    total, warmup, end = 60, 9, 1e-4
    theirs = _oracle_lrs(
        lambda o: hf.get_polynomial_decay_schedule_with_warmup(
            o, warmup, total - 1, lr_end=end, power=power
        ),
        total + 4,
    )
    ours = S.Polynomial(MAX_LR, total, power=power, warmup_steps=warmup, min_lr=end)
    _close(_ours(ours, total + 4), theirs)


@pytest.mark.parametrize("warmup,timescale", [(10, None), (0, None), (25, 100)])
def test_inverse_sqrt_equals_transformers(hf, warmup, timescale):
    theirs = _oracle_lrs(lambda o: hf.get_inverse_sqrt_schedule(o, warmup, timescale), 300)
    _close(_ours(S.InverseSqrt(MAX_LR, warmup, timescale), 300), theirs)


def test_inverse_sqrt_is_max_lr_times_sqrt_of_warmup_over_step():
    sched = S.InverseSqrt(1.0, warmup_steps=100)
    assert sched(100) == 1.0
    assert sched(400) == pytest.approx(0.5)
    assert sched(10_000) == pytest.approx(0.1)
    assert sched(50) == pytest.approx(0.5)  # half-way up the warm-up


@pytest.mark.parametrize("decay", ["linear", "cos", "1-sqrt"])
def test_wsd_equals_transformers_wsd(hf, decay):
    total, warmup, decay_steps, floor = 100, 10, 30, 0.01
    hf_decay = {"cos": "cosine"}.get(decay, decay)
    theirs = _oracle_lrs(
        lambda o: hf.get_wsd_schedule(
            o,
            warmup,
            decay_steps,
            num_stable_steps=total - 1 - warmup - decay_steps,
            decay_type=hf_decay,
            min_lr_ratio=floor / MAX_LR,
        ),
        total + 5,
    )
    ours = S.WSD(MAX_LR, total, warmup, decay_steps, decay=decay, start_lr=floor, min_lr=floor)
    _close(_ours(ours, total + 5), theirs)


def test_wsd_phases():
    sched = S.WSD(1.0, total_steps=101, warmup_steps=10, decay_steps=20)
    assert sched(0) == 0.0 and sched(5) == 0.5
    assert {sched(t) for t in range(10, 81)} == {1.0}  # stable until the decay starts
    assert sched(100) == 0.0 == sched(1000)
    assert sched(85) == pytest.approx(1 - math.sqrt(0.25))  # the 1-sqrt cool-down


@pytest.mark.parametrize("warmup", [0, 5])
def test_cosine_with_warmup_and_floor_equals_transformers(hf, warmup):
    total, floor = 80, 0.003
    theirs = _oracle_lrs(
        lambda o: hf.get_cosine_with_min_lr_schedule_with_warmup(
            o, warmup, total - 1, min_lr=floor
        ),
        total,
    )  # past its end transformers' cosine rises again; ours holds the floor
    ours = S.WarmupCosine(MAX_LR, total, warmup, min_lr=floor)
    _close(_ours(ours, total), theirs)
    assert ours(total + 10) == floor


@pytest.mark.parametrize(
    "name,params",
    [
        ("linear_decay", {"max_lr": 0.1, "warmup_steps": 3}),
        ("poly", {"max_lr": 0.1, "power": 0.9}),
        ("inv_sqrt", {"max_lr": 0.1, "warmup_steps": 3}),
        ("wsd", {"max_lr": 0.1, "warmup_steps": 3, "decay_steps": 4, "decay": "cos"}),
    ],
)
def test_build_policy_names_and_json_round_trip(name, params):
    assert name in S.POLICY_NAMES
    policy = S.build_policy(name, 20, momentum=0.9, **params)
    again = S.policy_from_dict(S.policy_to_dict(policy))
    assert again == policy
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, momentum=0.5)
    sched = S.PolicyScheduler(opt, policy)
    for _ in range(25):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(policy["lr"](25))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: S.LinearDecay(0.1, 10, warmup_steps=10), r"warmup_steps \(10\) must be < total_steps \(10\)"),
        (lambda: S.Polynomial(0.1, 10, power=0), r"power must be > 0, got 0"),
        (lambda: S.Polynomial(0.1, 10, min_lr=0.2), r"min_lr \(0\.2\) must be <= max_lr \(0\.1\)"),
        (lambda: S.InverseSqrt(0.1, -1), r"warmup_steps must be an integer >= 0, got -1"),
        (lambda: S.InverseSqrt(0.1, 0, timescale=0), r"timescale must be an integer >= 1, got 0"),
        (lambda: S.WSD(0.1, 10, 5, 5), r"warmup_steps \+ decay_steps \(5 \+ 5\) must be < total_steps \(10\)"),
        (lambda: S.WSD(0.1, 10, 1, 0), r"decay_steps must be an integer >= 1, got 0"),
        (lambda: S.WSD(0.1, 10, 1, 2, decay="exp"), r"decay must be one of 'linear', 'cos', '1-sqrt'; got 'exp'"),
    ],
)  # fmt: skip
def test_bad_parameters_say_what_is_wrong(make, match):
    with pytest.raises(UserError, match=match):
        make()


# ----------------------------------------------------------------------------- LR carry
def test_carry_lr_linear_and_sqrt_rules():
    # Goyal et al. 2017: 0.1 at batch 256 -> 3.2 at batch 8192 (32 x 8 GPUs x 32 accumulation).
    goyal = global_batch(32, accumulation_steps=32, devices=8)
    assert carry_lr(0.1, 256, goyal) == pytest.approx(3.2)
    assert carry_lr(0.4, 512, 128, rule="sqrt") == pytest.approx(0.2)
    assert carry_lr(0.4, 512, 128) == pytest.approx(0.1)
    assert carry_lr(0.4, 128, 128, rule="sqrt") == 0.4
    # Accumulation and devices are interchangeable: only the global batch counts.
    assert global_batch(64, 4, 1) == global_batch(64, 1, 4) == global_batch(256) == 256


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: carry_lr(0.1, 0, 128), r"from_batch must be an integer >= 1, got 0"),
        (lambda: carry_lr(0.1, 128, 64.0), r"to_batch must be an integer >= 1, got 64\.0"),
        (lambda: carry_lr(float("nan"), 128, 64), r"lr must be a finite number, got nan"),
        (lambda: carry_lr(-1.0, 128, 64), r"lr must be >= 0, got -1\.0"),
        (lambda: carry_lr(0.1, 128, 64, rule="squareroot"), r"unknown rule 'squareroot'.*known: linear, sqrt"),
        (lambda: global_batch(32, accumulation_steps=0), r"accumulation_steps must be an integer >= 1"),
        (lambda: global_batch(32, devices=True), r"devices must be an integer >= 1, got True"),
    ],
)  # fmt: skip
def test_carry_lr_bad_input(call, match):
    with pytest.raises(UserError, match=match):
        call()


def test_policy_scheduler_set_policy_applies_at_the_current_step():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5, momentum=0.9)
    sched = S.PolicyScheduler(opt, {})  # writes nothing until a policy is set
    assert opt.param_groups[0]["lr"] == 0.5
    for _ in range(3):
        opt.step()
        sched.step()
    policy = S.one_cycle(max_lr=1.0, total_steps=10)
    sched.set_policy(policy)
    assert opt.param_groups[0]["lr"] == policy["lr"](3) == sched.get_last_lr()[0]
    assert opt.param_groups[0]["momentum"] == policy["momentum"](3)
