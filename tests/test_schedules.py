"""Tests for superconv.schedules.

Oracles: torch's own OneCycleLR, CyclicLR, CosineAnnealingWarmRestarts,
CosineAnnealingLR and StepLR; closed forms evaluated by hand (Caffe's inv, the
paper's PC-LR boundaries); and an uninterrupted run for resume.
"""

from __future__ import annotations

import io
import json
import math
import random
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from superconv import schedules as S

TOL = {"rel": 1e-12, "abs": 1e-12}
CONFIGS = 50


def _params(n: int = 3) -> list[torch.Tensor]:
    return [torch.zeros(n, requires_grad=True)]


def _sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD(_params(), lr=lr, momentum=0.9)


def _adam(lr: float = 0.1) -> torch.optim.Adam:
    return torch.optim.Adam(_params(), lr=lr, betas=(0.9, 0.999))


def _read(optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """(lr, momentum) of the first param group; momentum is betas[0] for Adam-style."""
    group = optimizer.param_groups[0]
    momentum = group["betas"][0] if "betas" in group else group["momentum"]
    return float(group["lr"]), float(momentum)


def _torch_trace(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """Flattened (lr, momentum) for steps 0..steps-1 of a torch scheduler."""
    trace = [*_read(optimizer)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping without optimizer.step() is fine here
        for _ in range(steps - 1):
            scheduler.step()
            trace.extend(_read(optimizer))
    return trace


def _our_trace(policy: S.Policy, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    trace = []
    for t in range(steps):
        S.apply(policy, optimizer, t)
        trace.extend(_read(optimizer))
    return trace


# --- equality with torch's OneCycleLR ----------------------------------------------


def _one_cycle_config(rng: random.Random, three_phase: bool) -> dict:
    while True:
        total = rng.randint(1, 200)
        limit = 0.49 if three_phase else 0.99
        pct = rng.choice([0.1, 0.25, 0.3, 0.4, rng.uniform(0.01, limit)])
        if float(pct * total) - 1 != 0:  # torch divides by zero there (tested separately)
            break
    max_momentum = rng.uniform(0.5, 0.99)
    return dict(
        max_lr=10 ** rng.uniform(-3, 1),
        total_steps=total,
        pct_start=pct,
        div=rng.uniform(1.0, 100.0),
        final_div=10 ** rng.uniform(0, 5),
        momentum=(max_momentum, rng.uniform(0.3, max_momentum)),
    )


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_equals_torch_one_cycle_lr(three_phase, anneal):
    rng = random.Random(f"one_cycle-{three_phase}-{anneal}")
    for i in range(CONFIGS):
        cfg = _one_cycle_config(rng, three_phase)
        make = _adam if i % 2 else _sgd  # momentum as SGD momentum and as Adam betas[0]
        reference_opt = make()
        reference = torch_sched.OneCycleLR(
            reference_opt,
            max_lr=cfg["max_lr"],
            total_steps=cfg["total_steps"],
            pct_start=cfg["pct_start"],
            anneal_strategy=anneal,
            max_momentum=cfg["momentum"][0],
            base_momentum=cfg["momentum"][1],
            div_factor=cfg["div"],
            final_div_factor=cfg["final_div"],
            three_phase=three_phase,
        )
        expected = _torch_trace(reference_opt, reference, cfg["total_steps"])
        policy = S.one_cycle(**cfg, three_phase=three_phase, anneal=anneal)
        assert _our_trace(policy, make(), cfg["total_steps"]) == pytest.approx(expected, **TOL), cfg


def test_one_cycle_zero_length_warmup_takes_the_peak():
    # pct_start * total_steps == 1: torch divides by zero at step 0; we take the
    # phase's end value, continuous with the cosine anneal that follows.
    schedule = S.OneCycle(max_lr=2.0, total_steps=10, pct_start=0.1)
    final = 2.0 / 25.0 / 1e4
    expected = [final + (2.0 - final) / 2 * (1 + math.cos(math.pi * t / 9)) for t in range(10)]
    assert [schedule(t) for t in range(10)] == pytest.approx(expected, **TOL)


def test_one_cycle_endpoints_follow_div_and_final_div():
    schedule = S.OneCycle(max_lr=3.0, total_steps=1000, pct_start=0.25, div=30.0, final_div=100.0)
    assert schedule(0) == pytest.approx(0.1, **TOL)
    assert schedule(249) == pytest.approx(3.0, **TOL)
    assert schedule(999) == pytest.approx(0.001, **TOL)


def test_three_phase_annihilation_returns_to_initial_lr_then_falls_below():
    schedule = S.OneCycle(max_lr=1.0, total_steps=100, pct_start=0.25, three_phase=True)
    assert schedule(48) == pytest.approx(1.0 / 25, **TOL)  # end of the fall: 2*0.25*100 - 2
    assert schedule(99) == pytest.approx(1.0 / 25 / 1e4, **TOL)


# --- equality with torch's CyclicLR ------------------------------------------------------


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_triangular_equals_torch_cyclic_lr(mode):
    rng = random.Random(f"cyclic-{mode}")
    for i in range(CONFIGS):
        stepsize = rng.randint(1, 40) + rng.choice([0.0, 0.5])
        total = rng.randint(1, 300)
        min_lr = 10 ** rng.uniform(-3, 0)
        max_lr = min_lr * rng.uniform(1.0, 30.0)
        gamma = rng.uniform(0.95, 1.0) if mode == "exp_range" else 1.0
        max_momentum = rng.uniform(0.5, 0.99)
        base_momentum = rng.uniform(0.3, max_momentum)
        make = _adam if i % 2 else _sgd
        reference_opt = make()
        reference = torch_sched.CyclicLR(
            reference_opt,
            base_lr=min_lr,
            max_lr=max_lr,
            step_size_up=stepsize,
            mode=mode,
            gamma=gamma,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
        )
        expected = _torch_trace(reference_opt, reference, total)
        lr = S.Triangular(min_lr, max_lr, stepsize, mode=mode, gamma=gamma)
        policy = {"lr": lr, "momentum": S.momentum_schedule(lr, max_momentum, base_momentum)}
        assert _our_trace(policy, make(), total) == pytest.approx(expected, **TOL), (i, stepsize)


def test_the_cyclic_policy_by_name_equals_torch_cyclic_lr_with_its_momentum_cycle():
    # The CLI / config route (build_policy) to several triangular2 cycles.
    reference_opt = _sgd()
    reference = torch_sched.CyclicLR(
        reference_opt,
        base_lr=0.01,
        max_lr=0.5,
        step_size_up=7,
        mode="triangular2",
        base_momentum=0.85,
        max_momentum=0.95,
    )
    expected = _torch_trace(reference_opt, reference, 60)
    policy = S.build_policy(
        "cyclic", 60, min_lr=0.01, max_lr=0.5, stepsize=7, mode="triangular2", momentum=[0.95, 0.85]
    )
    assert _our_trace(policy, _sgd(), 60) == pytest.approx(expected, **TOL)
    with pytest.raises(ValueError, match="policy 'cyclic' needs stepsize"):
        S.build_policy("cyclic", 60, min_lr=0.01, max_lr=0.5)


def test_paper_clr_is_one_cycle_0p1_to_3_over_the_run():
    # Paper: CLR 0.1 -> 3.0 -> 0.1, stepsize 5,000 of 10,000 iterations.
    schedule = S.paper_clr(10_000)
    assert schedule.stepsize == 5000
    assert schedule(0) == pytest.approx(0.1, **TOL)
    assert schedule(2500) == pytest.approx(1.55, **TOL)
    assert schedule(5000) == pytest.approx(3.0, **TOL)
    assert schedule(7500) == pytest.approx(1.55, **TOL)
    # past the end it holds the value of the last iteration instead of cycling again
    assert schedule(10_000) == schedule(9_999) == schedule(25_000)
    assert schedule(9_999) == pytest.approx(0.1 + 2.9 / 5000, **TOL)


def test_clr_policy_cycles_momentum_inversely():
    policy = S.clr(0.1, 3.0, total_steps=100, momentum=(0.95, 0.85))
    assert policy["momentum"](0) == pytest.approx(0.95, **TOL)
    assert policy["momentum"](50) == pytest.approx(0.85, **TOL)
    assert policy["momentum"](25) == pytest.approx(0.90, **TOL)
    assert "momentum" not in S.clr(0.1, 3.0, total_steps=100)  # paper: constant momentum
    assert S.clr(0.1, 3.0, total_steps=100, momentum=0.9)["momentum"](50) == 0.9


# --- baselines ------------------------------------------------------------------------------


def test_paper_piecewise_boundaries():
    # Paper: 0.35, x0.1 at 50k and 70k of 80k iterations.
    schedule = S.paper_piecewise()
    assert schedule.boundaries == (50_000, 70_000)
    expected = {0: 0.35, 49_999: 0.35, 50_000: 0.035, 69_999: 0.035, 70_000: 0.0035}
    for step, value in expected.items():
        assert schedule(step) == pytest.approx(value, **TOL), step
    assert schedule(10**7) == pytest.approx(0.0035, **TOL)
    assert S.paper_piecewise(10_000).boundaries == (6_250, 8_750)


def test_piecewise_constant_segments():
    schedule = S.PiecewiseConstant((1.0, 2.0, 3.0, 4.0), (3, 3, 5))  # empty 2nd segment
    assert [schedule(t) for t in range(7)] == [1.0, 1.0, 1.0, 3.0, 3.0, 4.0, 4.0]


def test_inv_matches_caffe_closed_form():
    schedule = S.Inv(0.01)  # Caffe LeNet solver: gamma 1e-4, power 0.75
    assert schedule(0) == 0.01
    assert schedule(10_000) == pytest.approx(0.01 * 0.5946035575013605, **TOL)  # 2**-0.75
    assert S.Inv(1.0, gamma=1.0, power=1.0)(3) == pytest.approx(0.25, **TOL)


def test_step_decay_equals_torch_step_lr():
    optimizer = _sgd(lr=0.4)
    expected = _torch_trace(optimizer, torch_sched.StepLR(optimizer, step_size=7, gamma=0.3), 40)
    policy = {"lr": S.StepDecay(0.4, step_size=7, gamma=0.3)}
    assert _our_trace(policy, _sgd(), 40) == pytest.approx(expected, **TOL)


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_sgdr_equals_torch_warm_restarts(t_mult):
    optimizer = _sgd(lr=0.8)
    reference = torch_sched.CosineAnnealingWarmRestarts(
        optimizer, T_0=7, T_mult=t_mult, eta_min=0.01
    )
    expected = _torch_trace(optimizer, reference, 200)
    policy = {"lr": S.SGDR(0.8, t0=7, t_mult=t_mult, min_lr=0.01)}
    assert _our_trace(policy, _sgd(), 200) == pytest.approx(expected, **TOL)


def test_sgdr_restart_points():
    schedule = S.SGDR(1.0, t0=10, t_mult=2)
    for restart in (0, 10, 30, 70, 150):
        assert schedule(restart) == 1.0
        if restart:
            assert schedule(restart - 1) < 0.05  # just before a restart: near min_lr
    assert S.SGDR(1.0, t0=10)(1_000_000) == 1.0


def test_cosine_equals_torch_cosine_annealing():
    # torch's CosineAnnealingLR reaches eta_min at T_max; ours at total_steps - 1.
    optimizer = _sgd(lr=0.5)
    reference = torch_sched.CosineAnnealingLR(optimizer, T_max=49, eta_min=0.02)
    expected = _torch_trace(optimizer, reference, 50)
    policy = {"lr": S.Cosine(0.5, total_steps=50, min_lr=0.02)}
    assert _our_trace(policy, _sgd(), 50) == pytest.approx(expected, rel=1e-9)
    assert S.Cosine(0.5, 50, 0.02)(500) == pytest.approx(0.02, **TOL)


def test_warmup_cosine_shape():
    schedule = S.WarmupCosine(1.0, total_steps=111, warmup_steps=10, start_lr=0.1, min_lr=0.2)
    assert schedule(0) == pytest.approx(0.1, **TOL)
    assert schedule(5) == pytest.approx(0.55, **TOL)
    assert schedule(10) == pytest.approx(1.0, **TOL)
    assert schedule(60) == pytest.approx(0.6, **TOL)  # cosine midpoint of steps 10..110
    assert schedule(110) == pytest.approx(0.2, **TOL)
    assert schedule(1000) == pytest.approx(0.2, **TOL)
    no_warmup = S.WarmupCosine(1.0, total_steps=50, warmup_steps=0, min_lr=0.1)
    cosine = S.Cosine(1.0, total_steps=50, min_lr=0.1)
    assert [no_warmup(t) for t in range(50)] == pytest.approx([cosine(t) for t in range(50)], **TOL)


def test_ramps_for_the_range_test():
    linear = S.LinearRamp(0.0, 2.0, total_steps=21)
    assert [linear(t) for t in (0, 10, 20, 99)] == pytest.approx([0.0, 1.0, 2.0, 2.0], **TOL)
    exp = S.ExpRamp(1e-5, 10.0, total_steps=7)
    expected = [1e-5 * 10**t for t in range(7)]
    assert [exp(t) for t in range(7)] == pytest.approx(expected, **TOL)
    assert S.LinearRamp(0.5, 3.0, total_steps=1)(0) == 3.0  # one step tests the end value
    assert S.Constant(0.3)(12345) == 0.3


# --- apply -------------------------------------------------------------------------------


def test_apply_writes_adam_beta1_and_keeps_beta2():
    optimizer = torch.optim.AdamW(_params(), lr=0.1, betas=(0.9, 0.98), weight_decay=0.01)
    policy = {"lr": S.Constant(0.2), "momentum": S.Constant(0.85), "weight_decay": S.Constant(1e-4)}
    assert S.apply(policy, optimizer, 5) == {"lr": 0.2, "momentum": 0.85, "weight_decay": 1e-4}
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (0.2, (0.85, 0.98), 1e-4)


def test_apply_writes_every_group_and_tensor_lr_in_place():
    a, b = _params(), _params()
    lr = torch.tensor(0.01)
    optimizer = torch.optim.Adam([{"params": a}, {"params": b}], lr=lr, foreach=False)
    tensor_lr = optimizer.param_groups[0]["lr"]
    S.apply({"lr": S.Constant(0.5), "momentum": S.Constant(0.8)}, optimizer, 0)
    assert optimizer.param_groups[0]["lr"] is tensor_lr and float(tensor_lr) == 0.5
    assert [g["betas"][0] for g in optimizer.param_groups] == [0.8, 0.8]
    assert float(optimizer.param_groups[1]["lr"]) == 0.5


def test_apply_writes_nothing_when_a_value_is_invalid():
    optimizer = _sgd(lr=0.1)
    with pytest.raises(ValueError, match="momentum at step 3 must be < 1"):
        S.apply({"lr": S.Constant(0.5), "momentum": lambda step: 1.0}, optimizer, 3)
    assert optimizer.param_groups[0]["lr"] == 0.1


# --- the LRScheduler adapter ---------------------------------------------------------


def test_policy_scheduler_trains_like_torch_one_cycle_lr():
    torch.manual_seed(0)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    start = torch.nn.Linear(4, 1).double()

    def train(make_scheduler):
        model = torch.nn.Linear(4, 1).double()
        model.load_state_dict(start.state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        scheduler = make_scheduler(optimizer)
        lrs = []
        for _ in range(30):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            lrs.append(scheduler.get_last_lr()[0])
            scheduler.step()
        return lrs, [p.detach().clone() for p in model.parameters()]

    theirs = train(lambda o: torch_sched.OneCycleLR(o, 0.5, total_steps=31, three_phase=True))
    ours = train(lambda o: S.PolicyScheduler(o, S.one_cycle(0.5, 31, three_phase=True)))
    assert ours[0] == pytest.approx(theirs[0], **TOL)
    for mine, reference in zip(ours[1], theirs[1]):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


def test_policy_scheduler_holds_last_value_past_the_end():
    optimizer = _sgd()
    scheduler = S.PolicyScheduler(optimizer, S.one_cycle(1.0, total_steps=10))
    for _ in range(25):
        scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(1.0 / 25 / 1e4, **TOL)]
    assert _read(optimizer)[1] == pytest.approx(0.95, **TOL)


def _resume_cases():
    return [
        ("one_cycle_adam", lambda: S.one_cycle(2.0, 60, three_phase=True), _adam),
        ("clr_sgd", lambda: S.clr(0.1, 3.0, 60, momentum=(0.9, 0.8)), _sgd),
        ("sgdr_wd", lambda: S.build_policy("sgdr", 60, max_lr=1.0, t0=7, weight_decay=5e-4), _sgd),
    ]


@pytest.mark.parametrize("load_optimizer", [True, False])
@pytest.mark.parametrize("name,make_policy,make_optimizer", _resume_cases())
def test_resume_at_random_step_equals_uninterrupted(
    name, make_policy, make_optimizer, load_optimizer
):
    steps = 75  # beyond the 60-step schedules: resume must hold the last value too

    def run(scheduler, optimizer, n):
        trace = []
        for _ in range(n):
            scheduler.step()
            trace.append((*_read(optimizer), optimizer.param_groups[0]["weight_decay"]))
        return trace

    optimizer = make_optimizer()
    uninterrupted = run(S.PolicyScheduler(optimizer, make_policy()), optimizer, steps)
    rng = random.Random(name)
    for _ in range(5):
        k = rng.randint(1, steps - 1)
        first = make_optimizer()
        interrupted = S.PolicyScheduler(first, make_policy())
        before = run(interrupted, first, k)
        buffer = io.BytesIO()
        torch.save({"scheduler": interrupted.state_dict(), "opt": first.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        json.dumps(saved["scheduler"])  # plain data, fit for config.json / checkpoints

        second = make_optimizer(lr=7.0)
        resumed = S.PolicyScheduler(second, {"lr": S.Constant(9.0)})  # policy comes from the state
        if load_optimizer:
            second.load_state_dict(saved["opt"])
        resumed.load_state_dict(saved["scheduler"])
        after = run(resumed, second, steps - k)
        assert before + after == uninterrupted, k


def test_policy_scheduler_constructed_at_last_epoch_continues_there():
    optimizer = _sgd()
    uninterrupted = S.PolicyScheduler(optimizer, S.one_cycle(1.0, 50))
    for _ in range(21):
        uninterrupted.step()
    resumed_opt = _sgd()
    resumed = S.PolicyScheduler(resumed_opt, S.one_cycle(1.0, 50), last_epoch=20)
    assert resumed.last_epoch == 21
    assert _read(resumed_opt) == _read(optimizer)


# --- build_policy and JSON descriptions ---------------------------------------------


def test_build_policy_names():
    clr = S.build_policy("clr", 10_000)  # paper: 0.1 -> 3.0, momentum left to the optimizer
    assert clr["lr"](5000) == pytest.approx(3.0, **TOL) and "momentum" not in clr
    assert S.build_policy("clr", 100, momentum=0.9)["momentum"](50) == 0.9
    cycled = S.build_policy("clr", 100, momentum=[0.95, 0.85])  # a JSON list works too
    assert cycled["momentum"](50) == pytest.approx(0.85, **TOL)
    assert "momentum" in S.build_policy("one_cycle", 100, max_lr=1.0)
    assert "momentum" not in S.build_policy("one_cycle", 100, max_lr=1.0, momentum=False)  # TOML
    piecewise = S.build_policy("piecewise", 80_000)
    assert piecewise["lr"](50_000) == pytest.approx(0.035, **TOL) and "momentum" not in piecewise
    cycle = S.build_policy("one_cycle", 100, max_lr=1.0, three_phase=True, momentum=None)
    assert cycle == {"lr": S.OneCycle(1.0, 100, three_phase=True)}
    assert S.build_policy("step", 100, lr=1.0, step_size=10)["lr"](10) == pytest.approx(0.1)
    assert S.build_policy("cosine", 11, max_lr=1.0)["lr"](5) == pytest.approx(0.5, **TOL)
    assert S.build_policy("warmup_cosine", 100, max_lr=1.0, warmup_steps=10)["lr"](10) == 1.0
    assert S.build_policy("sgdr", 100, max_lr=1.0, t0=10)["lr"](10) == 1.0
    constant = S.build_policy("constant", 100, lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert {k: s(7) for k, s in constant.items()} == {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }
    assert S.build_policy("inv", 100, base_lr=0.01)["lr"](0) == 0.01


def test_policy_round_trips_through_json():
    policies = [
        S.one_cycle(2.0, 300, pct_start=0.2, three_phase=True, anneal="linear"),
        S.clr(0.1, 3.0, 301, momentum=(0.95, 0.85)),
        {"lr": S.Triangular(0.1, 1.0, 7, mode="exp_range", gamma=0.99)},
        {"lr": S.paper_piecewise(1000), "weight_decay": S.Constant(1e-4)},
        {"lr": S.StepDecay(1.0, 10), "momentum": S.Constant(0.9)},
        {"lr": S.WarmupCosine(1.0, 100, 5)},
        {"lr": S.SGDR(1.0, 5, 2)},
        {"lr": S.Inv(0.01)},
        {"lr": S.Cosine(1.0, 100)},
        {"lr": S.ExpRamp(1e-5, 10.0, 100)},
        {"lr": S.LinearRamp(0.0, 1.0, 100)},
    ]
    for policy in policies:
        rebuilt = S.policy_from_dict(json.loads(json.dumps(S.policy_to_dict(policy))))
        assert rebuilt == policy
        for t in (0, 17, 150, 299, 5000):
            assert {k: s(t) for k, s in rebuilt.items()} == {k: s(t) for k, s in policy.items()}


# --- every ValueError ------------------------------------------------------------------


def _custom_opt(cls):
    return cls(_params())


ERRORS = [
    (lambda: S.Triangular(3.0, 0.1, 10), r"min_lr \(3.0\) must be <= max_lr \(0.1\)"),
    (lambda: S.Triangular(0.1, 3.0, 0), "stepsize must be > 0"),
    (lambda: S.Triangular(0.1, 3.0, -2), "stepsize must be > 0"),
    (lambda: S.Triangular(-0.1, 3.0, 10), "min_lr must be >= 0"),
    (lambda: S.Triangular(0.1, 3.0, 10, mode="triangle"), "mode must be one of"),
    (lambda: S.Triangular(0.1, 3.0, 10, gamma=0.0), "gamma must be > 0"),
    (lambda: S.Triangular(0.1, math.inf, 10), "max_lr must be finite"),
    (lambda: S.Triangular(0.1, math.nan, 10), "max_lr must be finite"),
    (lambda: S.Triangular(0.1, "3", 10), "max_lr must be a real number"),
    (lambda: S.OneCycle(1.0, 100, pct_start=0.0), r"pct_start must be in \(0, 1\)"),
    (lambda: S.OneCycle(1.0, 100, pct_start=1.0), r"pct_start must be in \(0, 1\)"),
    (lambda: S.OneCycle(1.0, 100, pct_start=-0.3), r"pct_start must be in \(0, 1\)"),
    (lambda: S.OneCycle(1.0, 100, pct_start=0.5, three_phase=True), "< 0.5 with three_phase"),
    (lambda: S.OneCycle(-1.0, 100), "max_lr must be >= 0"),
    (lambda: S.OneCycle(1.0, 0), "total_steps must be an integer >= 1"),
    (lambda: S.OneCycle(1.0, 100.0), "total_steps must be an integer >= 1"),
    (lambda: S.OneCycle(1.0, True), "total_steps must be an integer >= 1"),
    (lambda: S.OneCycle(1.0, 100, div=0.0), "div must be > 0"),
    (lambda: S.OneCycle(1.0, 100, final_div=-1.0), "final_div must be > 0"),
    (lambda: S.OneCycle(1.0, 100, anneal="exp"), "anneal must be one of 'cos', 'linear'"),
    (lambda: S.one_cycle(1.0, 100, momentum=(1.0, 0.85)), r"max_momentum must be in \[0, 1\)"),
    (lambda: S.one_cycle(1.0, 100, momentum=(0.95, -0.1)), r"base_momentum must be in \[0, 1\)"),
    (lambda: S.one_cycle(1.0, 100, momentum=(0.95,)), r"momentum must be \(max_momentum"),
    (lambda: S.one_cycle(1.0, 100, momentum="high"), "momentum must be a sequence"),
    (lambda: S.clr(0.1, 3.0, 100, momentum=1.5), r"momentum must be in \[0, 1\)"),
    (lambda: S.clr(0.1, 3.0, 0), "total_steps must be an integer >= 1"),
    (lambda: S.clr(3.0, 0.1, 100), "min_lr .* must be <= max_lr"),
    (lambda: S.momentum_schedule(S.Cosine(1.0, 10)), "mirrors a Triangular or OneCycle"),
    (lambda: S.PiecewiseConstant((1.0, 0.1), (5, 6)), "one entry more than boundaries"),
    (lambda: S.PiecewiseConstant((1.0, 0.1, 0.01), (6, 5)), "boundaries must not decrease"),
    (lambda: S.PiecewiseConstant((1.0, -0.1), (5,)), r"values\[1\] must be >= 0"),
    (lambda: S.PiecewiseConstant((1.0, 0.1), (-5,)), r"boundaries\[0\] must be an integer >= 0"),
    (lambda: S.PiecewiseConstant(1.0, ()), "values must be a sequence"),
    (lambda: S.paper_piecewise(0), "total_steps must be an integer >= 1"),
    (lambda: S.StepDecay(1.0, 0), "step_size must be an integer >= 1"),
    (lambda: S.StepDecay(-1.0, 10), "lr must be >= 0"),
    (lambda: S.Cosine(1.0, 10, min_lr=2.0), "min_lr .* must be <= max_lr"),
    (
        lambda: S.WarmupCosine(1.0, 10, warmup_steps=10),
        r"warmup_steps \(10\) must be < total_steps",
    ),
    (lambda: S.WarmupCosine(1.0, 10, warmup_steps=-1), "warmup_steps must be an integer >= 0"),
    (lambda: S.WarmupCosine(1.0, 10, 2, start_lr=2.0), "start_lr .* must be <= max_lr"),
    (lambda: S.SGDR(1.0, t0=0), "t0 must be an integer >= 1"),
    (lambda: S.SGDR(1.0, t0=10, t_mult=0), "t_mult must be an integer >= 1"),
    (lambda: S.Constant(-0.1), "value must be >= 0"),
    (lambda: S.Inv(0.01, gamma=-1e-4), "gamma must be >= 0"),
    (lambda: S.Inv(0.01, power=math.inf), "power must be finite"),
    (lambda: S.ExpRamp(0.0, 10.0, 100), "start must be > 0"),
    (lambda: S.LinearRamp(0.0, 1.0, 0), "total_steps must be an integer >= 1"),
    (lambda: S.OneCycle(1.0, 10)(-1), "step must be >= 0"),
    (lambda: S.Constant(1.0)(-1), "step must be >= 0"),
    (
        lambda: S.build_policy("one_cylce", 100),
        "unknown policy 'one_cylce'; did you mean 'one_cycle'",
    ),
    (
        lambda: S.build_policy("clr", 100, max_Lr=1.0),
        "unknown parameter 'max_Lr' .*did you mean 'max_lr'",
    ),
    (lambda: S.build_policy("one_cycle", 100), "policy 'one_cycle' needs max_lr"),
    (lambda: S.build_policy("clr", 0), "total_steps must be an integer >= 1"),
    (
        lambda: S.build_policy("cosine", 10, max_lr=1.0, momentum=(0.95, 0.85)),
        "mirrors a Triangular",
    ),
    (
        lambda: S.build_policy("constant", 10, lr=0.1, weight_decay=-1.0),
        "weight_decay must be >= 0",
    ),
    (lambda: S.policy_from_dict({"lr": {"type": "OneCycel"}}), "unknown schedule type 'OneCycel'"),
    (lambda: S.policy_from_dict({"lr": {"type": "Constant", "vlaue": 1}}), "unknown field 'vlaue'"),
    (lambda: S.policy_from_dict({"learning_rate": {}}), "unknown hyper-parameter 'learning_rate'"),
    (lambda: S.policy_to_dict({"lr": lambda step: 0.1}), "not a superconv schedule"),
    (
        lambda: S.apply({"momentun": S.Constant(0.9)}, _sgd(), 0),
        "'momentun'; did you mean 'momentum'",
    ),
    (
        lambda: S.apply({"momentum": S.Constant(0.9)}, _custom_opt(torch.optim.Adagrad), 0),
        "Adagrad has no momentum",
    ),
    (
        lambda: S.apply({"weight_decay": S.Constant(0.1)}, _custom_opt(torch.optim.Rprop), 0),
        "Rprop has no weight_decay",
    ),
    (lambda: S.apply({"lr": lambda step: -0.1}, _sgd(), 4), "lr at step 4 must be finite and >= 0"),
    (lambda: S.apply({"lr": lambda step: math.nan}, _sgd(), 4), "lr at step 4 must be finite"),
    (lambda: S.apply({"lr": S.Constant(0.1)}, _sgd(), -1), "step must be >= 0"),
    (lambda: S.PolicyScheduler(_sgd(), {"lr": 0.1}), "schedule must be callable"),
    (lambda: S.PolicyScheduler(_sgd(), {"wd": S.Constant(0.1)}), "unknown hyper-parameter 'wd'"),
]


@pytest.mark.parametrize("make,match", ERRORS, ids=[m for _, m in ERRORS])
def test_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_policy_scheduler_step_with_explicit_step_jumps_there():
    optimizer = _sgd()
    scheduler = S.PolicyScheduler(optimizer, S.one_cycle(1.0, 100))
    scheduler.step(40)
    schedule = S.OneCycle(1.0, 100)
    assert scheduler.last_epoch == 40 and scheduler.get_last_lr() == [schedule(40)]
    scheduler.step()
    assert scheduler.get_last_lr() == [schedule(41)]


def test_errors_are_user_errors_for_the_command_line():
    # UserError (a ValueError) maps to the CLI's exit code 2.
    from superconv.errors import UserError

    with pytest.raises(UserError, match="stepsize must be > 0"):
        S.Triangular(0.1, 3.0, 0)


def test_apply_scales_the_lr_of_groups_with_an_lr_scale_and_the_scheduler_reports_it():
    body, head = _params(), _params()
    optimizer = torch.optim.SGD(
        [{"params": body, "lr_scale": 0.25}, {"params": head}], lr=0.1, momentum=0.9
    )
    policy = S.one_cycle(max_lr=1.0, total_steps=10)
    sched = S.PolicyScheduler(optimizer, policy)
    for step in range(10):
        lr = float(policy["lr"](step))
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.25 * lr, lr])
        assert sched.get_last_lr() == pytest.approx([0.25 * lr, lr])
        # momentum is the policy's in every group: lr_scale touches the LR only
        assert {g["momentum"] for g in optimizer.param_groups} == {float(policy["momentum"](step))}
        optimizer.step()
        sched.step()


@pytest.mark.parametrize("bad", [-0.5, float("nan"), "0.1", True])
def test_a_bad_lr_scale_is_refused_before_anything_is_written(bad):
    optimizer = torch.optim.SGD([{"params": _params(), "lr_scale": bad}], lr=0.1)
    with pytest.raises(ValueError, match="param group 0: lr_scale must be a finite number >= 0"):
        S.apply({"lr": S.Constant(0.5)}, optimizer, 0)
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_one_cycle_takes_torchs_names_and_matches_onecyclelr():
    from superconv.errors import UserError
    from superconv.schedules import PolicyScheduler, apply, build_policy, one_cycle

    kw = dict(div_factor=10.0, final_div_factor=100.0, anneal_strategy="linear",
              max_momentum=0.9, base_momentum=0.8, pct_start=0.25)
    ours = one_cycle(max_lr=0.5, total_steps=41, **kw)
    assert ours == build_policy("one_cycle", 41, max_lr=0.5, **kw)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    theirs = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=41, **kw)
    mine = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    for step in range(40):
        values = apply(ours, mine, step)
        assert values["lr"] == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        assert values["momentum"] == pytest.approx(opt.param_groups[0]["momentum"], abs=1e-12)
        opt.step()
        theirs.step()
    with pytest.raises(UserError, match="did you mean 'div_factor'"):
        one_cycle(1.0, 10, div_factr=5)
    with pytest.raises(UserError, match="not both"):
        build_policy("one_cycle", 10, max_lr=1.0, div=4, div_factor=5)
    assert "momentum" not in build_policy("one_cycle", 10, max_lr=1.0, cycle_momentum=False)
    with pytest.raises(UserError, match="not the name 'one_cycle'"):
        PolicyScheduler(opt, "one_cycle")
