"""The named rules of superconv.suggest on synthetic curves with known answers, the ports
against the peers' own code, and the suggestion benchmark's scorer on a small recorded fixture."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from superconv import suggest as suggest_module
from superconv import suggest_bench as sb
from superconv.errors import UserError
from superconv.fit import FACTORS
from superconv.plan import rule_label
from superconv.range_test import RangeTestCurve
from superconv.suggest import (
    CYCLE,
    RULES,
    Suggestion,
    suggest,
    suggest_all,
    suggest_each,
    valley_index,
)

ROOT = Path(__file__).resolve().parents[1]


def ema(losses, beta=0.98):
    """The recorded smoothing of range_test (bias-corrected EMA, as fastai / Lightning)."""
    avg, out = 0.0, []
    for i, v in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def exp_curve(edge=0.3, n=200, start=1e-4, end=10.0, noise=0.0, seed=0, evals=True):
    """Loss falls as log LR grows, bottoms out at ``edge`` and blows up past it."""
    rng = np.random.default_rng(seed)
    lrs = list(np.geomspace(start, end, n))
    losses = []
    for lr in lrs:
        t = math.log10(lr / edge)
        base = 2.3 - 1.5 / (1 + math.exp(-3 * (t + 1.5))) if t <= 0 else 0.8 + 20 * t**2
        losses.append(base * (1 + noise * rng.standard_normal()))
    curve = RangeTestCurve(
        lrs=lrs, losses=losses, smoothed_losses=ema(losses), mode="exp", num_steps=n
    )
    if evals:
        steps = list(range(9, n, 10))
        curve.eval_steps = steps
        curve.eval_lrs = [lrs[s] for s in steps]
        curve.val_losses = [losses[s] for s in steps]
        curve.val_accs = [max(0.1, 1 - losses[s] / 2.5) for s in steps]
    return curve


# ----------------------------------------------------------------------------- the cycle shape
def test_cycle_shape_is_the_fair_comparisons_swept_1cycle():
    assert CYCLE.policy_params(0.2) == {"div": 4, "max_lr": 0.2}
    assert CYCLE.min_lr(0.8) == pytest.approx(0.2)
    record = json.loads(
        (ROOT / "results/fair-comparison/reduced/onecycle_swept-5ep/seed1/config.json").read_text()
    )
    assert CYCLE.matches(record["policy_built"])
    other = json.loads(
        (ROOT / "results/mnist-lenet/reduced/onecycle-12ep/seed0/config.json").read_text()
    )
    assert not CYCLE.matches(other["policy_built"])  # div 25: another shape


# ----------------------------------------------------------------------------- known answers
def test_loss_edge_finds_the_divergence_point_and_scales_it():
    curve = exp_curve(edge=0.3)
    s = suggest(curve, "loss_edge", fraction=0.25)
    # the centred smoothing pulls the minimum a little below the cliff, never past it
    assert 0.3 / 2 <= s.edge_lr <= 0.3
    assert s.max_lr == pytest.approx(s.edge_lr / 4)
    assert s.min_lr == pytest.approx(s.max_lr / CYCLE.div) and s.div == CYCLE.div
    assert s.band[0] == pytest.approx(s.max_lr / 2) and s.band[1] <= s.edge_lr
    assert s.safe_max_lr <= s.max_lr and s.safe_max_lr <= s.edge_lr / 4 + 1e-12
    assert s.rule == "loss_edge" and s.signal == "train_loss" and "bottoms out" in s.reason


def test_every_rule_lands_below_the_divergence_point_of_a_bowl():
    curve = exp_curve(edge=0.05)
    for name, result in suggest_all(curve).items():
        assert isinstance(result, Suggestion), (name, result)
        assert 1e-4 <= result.max_lr <= 0.05 * 1.5, (name, result.max_lr)
        assert result.rule == name and result.reason


def test_budget_power_needs_a_budget_and_scales_with_it(monkeypatch):
    from superconv import suggest as suggest_module

    curve = exp_curve(edge=0.3)
    # no budget: the test is taken as the default test's share of the run, and it says so
    assumed = suggest(curve, "loss_edge", fraction=0.25, budget_power=0.5)
    share = suggest_module.DEFAULT_TEST["fraction"]
    given = suggest(
        curve,
        "loss_edge",
        budget=math.ceil(curve.num_steps / share),
        fraction=0.25,
        budget_power=0.5,
    )
    assert assumed.max_lr == pytest.approx(given.max_lr) and "no budget given" in assumed.reason
    monkeypatch.setattr(suggest_module, "DEFAULT_TEST", None)
    with pytest.raises(UserError, match="budget"):
        suggest(curve, "loss_edge", fraction=0.25, budget_power=0.5)
    short = suggest(curve, "loss_edge", budget=2_000, fraction=0.25, budget_power=0.5)
    long = suggest(curve, "loss_edge", budget=8_000, fraction=0.25, budget_power=0.5)
    assert long.max_lr / short.max_lr == pytest.approx(2.0)


def test_noisy_flat_curve_gives_finite_suggestions_inside_the_range():
    rng = np.random.default_rng(1)
    n = 150
    lrs = list(np.geomspace(1e-4, 1.0, n))
    losses = list(2.3 + 0.05 * rng.standard_normal(n))
    curve = RangeTestCurve(lrs=lrs, losses=losses, smoothed_losses=ema(losses), num_steps=n)
    for name, result in suggest_all(curve).items():
        if name == "val_loss_edge":  # no evaluations in this curve: it says so
            assert "0 validation losses" in result
            continue
        assert isinstance(result, Suggestion), name
        assert 1e-4 <= result.max_lr <= 1.0


def test_divergence_inside_the_burn_in_is_no_suggestion_with_advice():
    lrs = [0.1 * i for i in range(4)]
    losses = [2.3, 2.2, 50.0, math.nan]
    curve = RangeTestCurve(
        lrs=lrs[:3],
        losses=losses[:3],
        smoothed_losses=ema(losses[:3]),
        num_steps=100,
        stop_reason="diverged",
    )
    with pytest.raises(UserError, match="needs at least 3"):
        suggest(curve, "loss_edge")


def test_burn_in_cannot_swallow_a_curve_that_broke_down_early():
    # A 1,000-step linear test that blew up at step 60: a 5% burn-in of the planned
    # steps (50) would leave 10 points; it is capped at a fifth of the steps run (12).
    n, planned = 60, 1000
    lrs = list(np.linspace(0.0, 0.18, n))
    losses = [2.3 - 1.5 * (lr / 0.12) if lr < 0.12 else 0.5 + 40 * (lr - 0.12) for lr in lrs]
    curve = RangeTestCurve(
        lrs=lrs,
        losses=losses,
        smoothed_losses=ema(losses),
        num_steps=planned,
        stop_reason="diverged",
    )
    s = suggest(curve, "loss_edge", fraction=1.0)
    assert s.edge_lr == pytest.approx(0.12, rel=0.1)
    # an explicit step count is the user's choice and is kept
    with pytest.raises(UserError, match="needs at least 3"):
        suggest(curve, "loss_edge", burn_in=58)


def test_unknown_rule_and_setting_are_clear_errors():
    curve = exp_curve()
    with pytest.raises(UserError, match="did you mean 'valley'"):
        suggest(curve, "vally")
    with pytest.raises(UserError, match="unknown setting"):
        suggest(curve, "steepest", fraction=0.5)
    with pytest.raises(UserError, match="fraction"):
        suggest(curve, "loss_edge", fraction=2.0)
    with pytest.raises(UserError, match="budget"):
        suggest(curve, "loss_edge", budget=0)


def test_old_records_still_read():
    data = json.loads(
        (ROOT / "results/fair-comparison/reduced/range-test/seed0/range_test.json").read_text()
    )
    s = Suggestion.from_dict(data["suggestion"])
    assert s.max_lr == pytest.approx(1.5897, rel=1e-3)
    assert s.rule == "plateau_edge" and s.min_lr == pytest.approx(s.max_lr / 4)
    assert s.safe_max_lr == pytest.approx(s.max_lr / 4)  # the old rule's pick is its own edge
    again = Suggestion.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s
    # and the committed curve reads the same by the plateau-edge rule today
    curve = RangeTestCurve.from_dict(data["curve"])
    assert suggest(curve, "plateau_edge").max_lr == pytest.approx(s.max_lr)


# ----------------------------------------------------------------------------- the ports
def fastai_valley_literal(lrs, losses):
    """fastai/callback/schedule.py ``valley`` as written there (the slow reference)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


@pytest.mark.parametrize("seed", range(8))
def test_valley_port_matches_fastais_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 120))
    losses = list(np.cumsum(rng.standard_normal(n)))
    assert valley_index(losses) == fastai_valley_literal(list(range(n)), losses)


def test_steepest_port_matches_torch_lr_finder():
    tlf = pytest.importorskip("torch_lr_finder", reason="torch-lr-finder not installed")
    import torch
    from matplotlib.figure import Figure

    curve = exp_curve(edge=0.2, noise=0.05)
    finder = tlf.LRFinder.__new__(tlf.LRFinder)
    finder.history = {"lr": list(curve.lrs), "loss": list(curve.smoothed_losses)}
    _, theirs = finder.plot(ax=Figure().add_subplot(), suggest_lr=True)
    assert suggest(curve, "steepest").max_lr == pytest.approx(theirs)
    del torch


def test_lightning_port_matches_lightning():
    pytest.importorskip("lightning", reason="lightning not installed")
    from lightning.pytorch.tuner.lr_finder import _LRFinder

    for mode, curve in (("exponential", exp_curve(edge=0.2, noise=0.05)),):
        finder = _LRFinder(mode, curve.lrs[0], curve.lrs[-1], len(curve.lrs))
        finder.results = {"lr": list(curve.lrs), "loss": list(curve.smoothed_losses)}
        assert suggest(curve, "lightning").max_lr == pytest.approx(finder.suggestion())


def test_min_loss_10_is_fastais_minimum():
    curve = exp_curve(edge=0.2, noise=0.02)
    n = curve.num_steps
    lrs, losses = np.array(curve.lrs)[n // 10 : -5], np.array(curve.smoothed_losses)[n // 10 : -5]
    assert suggest(curve, "min_loss_10").max_lr == pytest.approx(lrs[np.argmin(losses)] / 10)


def test_rules_are_all_listed():
    assert set(RULES) == {
        "steepest",
        "lightning",
        "min_loss_10",
        "valley",
        "plateau_edge",
        "loss_edge",
        "val_loss_edge",
    }


# ----------------------------------------------------------------------------- the scorer
def write_run(folder: Path, config: dict, summary: dict | None = None, extra: dict | None = None):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    for name, value in (extra or {}).items():
        (folder / name).write_text(json.dumps(value))


def recorded_fixture(root: Path) -> sb.Task:
    """A tiny results folder for the mnist-demo task: a 4-point sweep and two range tests."""
    from superconv.schedules import policy_to_dict
    from superconv.train import make_policy

    def build_policy_record(config):
        return policy_to_dict(make_policy(config))

    task = sb.get_task("t3-lenet-demo")
    accs = {0.025: 90.0, 0.05: 94.0, 0.1: 96.0, 0.2: 95.0, 0.4: 10.0}  # 0.4 collapsed to chance
    for lr, acc in accs.items():
        config = task.trial_config(lr)
        record = {**config.to_dict(), "policy_built": build_policy_record(config), "seed": 0}
        status = "finished"
        write_run(
            root / "suggest/reduced" / f"t3-lenet-demo-sweep-max_lr{lr:g}/seed0",
            record,
            {"status": status, "final_val_acc": acc, "final_test_acc": acc - 0.5},
        )
    # a second seed at the best point, and a run of another shape that must be ignored
    config = task.trial_config(0.1)
    write_run(
        root / "suggest/reduced/t3-lenet-demo-sweep-max_lr0.1/seed1",
        {**config.to_dict(), "policy_built": build_policy_record(config), "seed": 1},
        {"status": "finished", "final_val_acc": 95.0, "final_test_acc": 95.0},
    )
    other = config.replace(policy_params={"max_lr": 0.05})  # div 25: not the benchmark's cycle
    write_run(
        root / "suggest/reduced/t3-lenet-demo-sweep-max_lr0.05/seed1",
        {**other.to_dict(), "policy_built": build_policy_record(other), "seed": 1},
        {"status": "finished", "final_val_acc": 99.0},
    )
    long = task.range_lengths()[1]
    for seed, edge in ((0, 0.7), (1, 0.8)):
        curve = exp_curve(edge=edge, n=long)
        write_run(
            root / f"suggest/reduced/t3-lenet-demo-rt-exp-{long}/seed{seed}",
            {"seed": seed, "range_test": {"mode": "exp", "num_steps": long}},
            {"status": "finished"},
            {"range_test.json": {"curve": curve.to_dict()}},
        )
    return task


def test_scorer_on_a_recorded_fixture(tmp_path):
    task = recorded_fixture(tmp_path)
    points = sb.sweep_points(task, tmp_path)
    assert [(p.max_lr, p.seed) for p in points] == [
        (0.025, 0),
        (0.05, 0),
        (0.1, 0),
        (0.1, 1),
        (0.2, 0),
        (0.4, 0),
    ]  # the div-25 run is not counted
    grid = sb.grid_of(task, points)
    assert grid.best_lr == 0.1 and grid.best == pytest.approx(95.5)
    assert grid.diverged == (False, False, False, False, True)  # 10% <= chance + 5
    assert grid.se == pytest.approx(math.sqrt(0.5) / math.sqrt(2))
    assert sb.tolerance(grid) == 1.0
    # interpolation in log LR: halfway (geometrically) between 0.05 and 0.1
    assert grid.accuracy_at(math.sqrt(0.05 * 0.1)) == pytest.approx((94 + 95.5) / 2)
    assert grid.accuracy_at(0.01) is None and grid.diverges_at(0.3)

    run = sb.range_test_runs(task, tmp_path)[0]
    hit = sb.score_curve(task, grid, sb.Setting("loss_edge", (("fraction", 0.25),)), run)
    picked = suggest(RangeTestCurve.from_dict(run["curve"]), "loss_edge", fraction=0.25).max_lr
    assert hit.max_lr == picked and hit.ratio == pytest.approx(picked / 0.1)
    assert hit.lost == pytest.approx(95.5 - grid.accuracy_at(picked))
    assert 0.5 <= hit.ratio <= 2 and hit.lost <= 1.0 and hit.met
    too_high = sb.score_curve(task, grid, sb.Setting("loss_edge", (("fraction", 1.0),)), run)
    assert too_high.diverged and not too_high.met
    too_low = sb.score_curve(task, grid, sb.Setting("loss_edge", (("fraction", 1 / 16),)), run)
    assert too_low.ratio < 0.5 and not too_low.met  # 4x too low: a miss even if little is lost
    # after fit's check (candidates x4, x2, x1, x1/2): the best candidate the grid can score
    assert too_high.checked_lost == pytest.approx(
        95.5 - max(a for a in (grid.accuracy_at(too_high.max_lr * f) for f in FACTORS) if a)
    )
    assert sb.checked_lost(grid, 0.1) == 0.0 and sb.checked_lost(grid, 4.0) is None
    assert sb.checked_lost(grid, 0.2) == 0.0  # 0.2 x 1/2 = 0.1, the best
    # 0.4 x 1/2 = 0.2 is the lowest candidate; the rest sit on or above the diverged 0.4
    assert sb.checked_lost(grid, 0.4) == pytest.approx(95.5 - grid.accuracy_at(0.2))

    # 3 repeats, the median kept (a test with no suggestion is left out of the median)
    from types import SimpleNamespace

    three = sb.Setting("loss_edge", (("fraction", 0.25),), repeats=3)
    picks = [({}, SimpleNamespace(max_lr=v)) for v in (0.05, 0.4, 0.1)]
    median = sb._score_median(task, grid, three, picks)
    assert median.max_lr == 0.1 and median.seed == -1 and median.met
    two = sb._score_median(task, grid, three, picks[:2] + [({}, "no suggestion: too short")])
    assert two.max_lr == pytest.approx(math.sqrt(0.05 * 0.4))
    none = sb._score_median(task, grid, three, [({}, "no suggestion: too short")] * 3)
    assert none.max_lr is None and not none.met
    assert "x3 (median)" in three.label and three in sb.settings()

    data = sb.collect(tmp_path, [task.name])
    scores = sb.score_all(data, [hit.setting, too_high.setting, too_low.setting])
    assert sb.choose(scores) == hit.setting
    summary = sb.summarise([s for s in scores if s.setting == hit.setting])
    assert summary["n"] == 2 and summary["no_suggestion"] == 0



@pytest.fixture(scope="module")
def score():
    """benchmarks/suggest/score.py, imported as a module (it is a script, not in the package)."""
    folder = str(ROOT / "benchmarks" / "suggest")
    sys.path.insert(0, folder)
    try:
        import score as module
    finally:
        sys.path.remove(folder)
    return module

def test_score_command_writes_table_plot_and_json(tmp_path, capsys, score):
    recorded_fixture(tmp_path)
    assert score.main(["--results", str(tmp_path), "--tasks", "t3-lenet-demo"]) == 0
    out = tmp_path / "suggest"
    text = (out / "score.md").read_text()
    assert "t3-lenet-demo" in text and "Leave one task out" in text
    assert "No confirmation run has ended yet." in text
    # two confirmation runs at 0.08 (the default's pick): 0.8x the best, about 1 point lost
    from superconv.schedules import policy_to_dict
    from superconv.train import make_policy

    config = sb.get_task("t3-lenet-demo").trial_config(0.08)
    default = sb.as_rule(suggest_module.DEFAULT)
    default_confirm = sb.confirm_name(sb.get_task("t3-lenet-demo"), default)
    for seed, acc in ((0, 95.0), (1, 94.6)):
        record = {**config.to_dict(), "policy_built": policy_to_dict(make_policy(config))}
        write_run(
            tmp_path / "suggest/reduced" / default_confirm / f"seed{seed}",
            {**record, "seed": seed},
            {"status": "finished", "final_val_acc": acc, "final_test_acc": acc},
        )
    assert score.main(["--results", str(tmp_path), "--tasks", "t3-lenet-demo"]) == 0
    text = (out / "score.md").read_text()
    label = rule_label(default)
    assert f"| t3-lenet-demo | {label} | 0.08 | 0.8x | 95.00, 94.60 | 95.50 | +0.70 | yes |" in text
    # fit's check measured: first-rung runs that pick 0.2 (full budget: 0.1 best, 95.0 at 0.2)
    task = sb.get_task("t3-lenet-demo")
    for lr, acc in ((0.05, 80.0), (0.1, 84.0), (0.2, 86.0), (0.4, 12.0)):
        short = task.check_config(lr)
        assert short.iterations == task.check_steps < task.budget
        write_run(
            tmp_path / f"suggest/reduced/t3-lenet-demo-short-max_lr{lr:g}/seed0",
            {**short.to_dict(), "seed": 0},
            {"status": "finished", "final_val_acc": acc},
        )
    grid = sb.collect(tmp_path, ["t3-lenet-demo"])["t3-lenet-demo"]["grid"]
    r = sb.check_ranking(task, grid, tmp_path)
    assert r["short_pick"] == 0.2 and r["within_2x"] and not r["same_best"]
    assert r["regret"] == pytest.approx(95.5 - 95.0)
    assert r["short"][0.4] == task.chance  # 12% <= chance + 5: collapsed, scored as chance
    assert r["kendall_tau"] == pytest.approx(4 / 6)  # 0.1 vs 0.2 is the one pair out of order
    assert score.main(["--results", str(tmp_path), "--tasks", "t3-lenet-demo"]) == 0
    assert "Does fit's short check rank like the full budget?" in (out / "score.md").read_text()
    assert (out / "plots" / "suggest-vs-best.png").stat().st_size > 1000
    record = json.loads((out / "score.json").read_text())
    assert record["tasks"] == ["t3-lenet-demo"] and record["seconds"] >= 0
    assert score.main(["--results", str(tmp_path / "empty")]) == 2


def test_the_fair_comparisons_committed_runs_are_reused_where_the_shape_matches():
    """t5/t6/t8 take the fair comparison's 1cycle runs: the swept rows and the range-test rows
    (max_lr 1.59, div 4.0) match the benchmark's cycle; the committed runs are enough for
    t5's grid to bracket its best on both sides."""
    t5 = sb.get_task("t5-resnet20-5ep")
    points = [p for p in sb.sweep_points(t5, ROOT / "results") if p.path.startswith("fair")]
    lrs = sorted({round(p.max_lr, 2) for p in points})
    assert lrs == [0.1, 0.2, 0.4, 0.8, 1.59, 1.6]
    # sweep seed 0 at 0.2 and onecycle_swept-5ep seed 0 are one run: counted once
    assert sum(1 for p in points if p.max_lr == 0.2) == 3
    grid = sb.grid_of(t5, points)
    assert grid.best_lr not in (min(grid.lrs), max(grid.lrs))
    for name in ("t6-resnet20-15ep", "t8-resnet20-10k"):
        task = sb.get_task(name)
        reused = [p for p in sb.sweep_points(task, ROOT / "results") if p.path.startswith("fair")]
        assert {round(p.max_lr, 2) for p in reused} == {0.2, 1.59} and len(reused) == 6
    # the check's first rung is trained at the reused best point too, not only at the
    # points this benchmark sweeps itself (without 0.2, t5's ranking missed its best)
    steps = {s.name: s for s in sb.plan_steps()}
    for name in ("t5-resnet20-5ep", "t6-resnet20-15ep", "t8-resnet20-10k"):
        task = sb.get_task(name)
        short = steps[f"{name}-short"].values
        assert 0.2 in short and 0.2 not in task.grid and set(task.grid) < set(short)
        assert list(short) == sorted(short)
    # mnist-lenet's 1cycle (div 25, 60k training images) is not t2's run, though both are LeNet
    record = json.loads(
        (
            ROOT / "results/mnist-lenet/reduced/sweep-onecycle-max_lr0.1/seed0/config.json"
        ).read_text()
    )
    assert sb._same_shape(sb.get_task("t2-lenet-12ep"), record) is None
    mine = sb.get_task("t2-lenet-12ep").trial_config(0.1).to_dict()
    from superconv.schedules import policy_to_dict
    from superconv.train import make_policy

    mine["policy_built"] = policy_to_dict(
        make_policy(sb.get_task("t2-lenet-12ep").trial_config(0.1))
    )
    assert sb._same_shape(sb.get_task("t2-lenet-12ep"), json.loads(json.dumps(mine))) == 0.1


def test_suggest_each_reads_once_and_agrees_with_suggest():
    curve = exp_curve(edge=0.2, noise=0.03)
    asks = [("loss_edge", {"fraction": f}) for f in (0.5, 0.25)] + [
        ("valley", {}),
        ("steepest", {}),
    ]
    many = suggest_each(curve, asks, budget=1000)
    for (rule, params), got in zip(asks, many):
        assert got == suggest(curve, rule, 1000, **params)
    short = RangeTestCurve(
        lrs=[0.1, 0.2], losses=[2.0, 9.0], smoothed_losses=[2.0, 9.0], num_steps=100
    )
    assert all("needs at least 3" in m for m in suggest_each(short, asks))


def test_confirmation_rows_train_at_each_confirmed_rules_suggestion(monkeypatch):
    from superconv.plan import RangeTest, Train, Tuned
    from superconv.runner import _Job, _pick

    monkeypatch.setattr(suggest_module, "DEFAULT_TEST", None)
    assert not any("-confirm" in s.name for s in sb.plan_steps())  # no default test
    monkeypatch.setattr(suggest_module, "DEFAULT", {"rule": "loss_edge", "fraction": 0.5})
    monkeypatch.setattr(
        suggest_module, "DEFAULT_TEST", {"mode": "exp", "fraction": 0.04, "min_steps": 30}
    )
    candidate = {"rule": "loss_edge", "fraction": 0.25}
    monkeypatch.setattr(sb, "CANDIDATE_DEFAULTS", (candidate, suggest_module.DEFAULT))
    steps = {s.name: s for s in sb.plan_steps()}
    # one row per confirmed rule: every past default, the current one, then the candidates
    # (a candidate that is the default already is not trained twice)
    past = [sb.as_rule(d) for d in sb.PAST_DEFAULTS]
    current, new = ("loss_edge", (("fraction", 0.5),)), ("loss_edge", (("fraction", 0.25),))
    assert sb.confirmed_rules() == [*past, current, new]
    assert sb.confirmation_order() == [current, new, *reversed(past)]  # as reports list them
    rows = [s for s in steps.values() if s.name.startswith("t1-lenet-2ep-confirm-")]
    assert [r.name for r in rows] == [
        f"t1-lenet-2ep-confirm-{rule_label(r)}" for r in sb.confirmed_rules()
    ]
    assert rows[-2].name == "t1-lenet-2ep-confirm-loss_edge-f0.5"
    assert rows[-1].name == "t1-lenet-2ep-confirm-loss_edge-f0.25"
    tuned_of = {}
    for row in rows:
        assert isinstance(row, Train) and row.seeds == 2
        (tuned,) = row.tuned
        assert tuned.source == "t1-lenet-2ep-rt-exp-69"  # 4% of 1,719 iterations
        assert tuned.budget == 1719 and tuned.key == f"{tuned.source}@{rule_label(tuned.rule)}"
        tuned_of[row.name] = tuned
    source = steps["t1-lenet-2ep-rt-exp-69"]
    assert isinstance(source, RangeTest) and source.rule is None
    # The committed seed-0 curve, read by each rule: the value each row trains at.
    folder = ROOT / "results/suggest/reduced/t1-lenet-2ep-rt-exp-69/seed0"
    curve = RangeTestCurve.from_dict(json.loads((folder / "range_test.json").read_text())["curve"])
    values: dict = {}
    readers = list(tuned_of.values()) + [Tuned("max_lr", "elsewhere", "max_lr", past[0], 9)]
    _pick(source, [_Job(source, source.name, 0, folder)], values, {}, readers)
    assert "elsewhere" not in str(sorted(values))  # a reader of another test is not read here
    for row in rows:
        tuned = tuned_of[row.name]
        name, constants = tuned.rule
        expected = suggest(curve, name, 1719, **dict(constants)).max_lr
        assert values[tuned.key]["max_lr"] == pytest.approx(expected)
        config = row.resolve(values)
        assert config.policy_params["max_lr"] == pytest.approx(expected)
        assert config.policy_params["div"] == 4  # the benchmark's cycle shape
    first, last = (values[tuned_of[r.name].key]["max_lr"] for r in (rows[0], rows[-1]))
    assert first != pytest.approx(last)  # two rules, two values, kept apart


def test_rule_label_names_a_setting_for_a_folder():
    assert rule_label(("loss_edge", (("fraction", 0.125), ("budget_power", 0.5)))) == (
        "loss_edge-bp0.5-f0.125"
    )
    assert rule_label(("valley", ())) == "valley"


def test_score_reports_the_lr_carried_from_batch_128_to_512(score):

    def grid(lrs, means, best):
        n = len(lrs)
        return sb.Grid(lrs, means, (1,) * n, (False,) * n, best, max(means), math.nan, math.nan)

    data = {
        "t5-resnet20-5ep": {
            "task": sb.get_task("t5-resnet20-5ep"),
            "grid": grid((0.1, 0.2, 0.4), (79.0, 81.0, 80.0), 0.2),
        },
        "t9-resnet20-b512": {
            "task": sb.get_task("t9-resnet20-b512"),
            "grid": grid((0.2, 0.4, 0.8, 1.6), (70.0, 76.0, 78.0, 74.0), 0.8),
        },
    }
    text = "\n".join(score._batch_carry(data, [], None))
    # linear: 0.2 x 4 = 0.8, the best at 512; sqrt: 0.2 x 2 = 0.4, half of it, 2 points lost
    assert "| swept best at 128 0.2, linear | 0.8 | 0.8 | 1x | 0.00 | – |" in text
    assert "| swept best at 128 0.2, sqrt | 0.4 | 0.8 | 0.5x | 2.00 | – |" in text
    assert score._batch_carry({"t5-resnet20-5ep": data["t5-resnet20-5ep"]}, [], None) == []


def test_score_says_where_its_choice_is_not_the_librarys_default(monkeypatch, score):
    default = {"rule": "loss_edge", "fraction": 1 / 6, "budget_power": 0.25}
    test = {"mode": "linear", "fraction": 0.04, "min_steps": 30, "repeats": 1}
    monkeypatch.setattr(score, "DEFAULT", default)
    monkeypatch.setattr(suggest_module, "DEFAULT", default)
    monkeypatch.setattr(suggest_module, "DEFAULT_TEST", test)
    monkeypatch.setattr(sb, "CANDIDATE_DEFAULTS", ({"rule": "loss_edge", "fraction": 1 / 6},))
    short = 0
    assert sb.RANGE_FRACTIONS[short][0] == 0.04
    same = sb.Setting("loss_edge", (("fraction", 1 / 6), ("budget_power", 0.25)), "linear", short)
    assert score._default_vs_choice(same) == []  # the default: nothing to say
    candidate = sb.Setting("loss_edge", (("fraction", 1 / 6),), "linear", short)
    (line,) = [x for x in score._default_vs_choice(candidate) if x]
    assert "this choice differs: a candidate" in line and "budget_power=0.25" in line
    other = sb.Setting("loss_edge", (("fraction", 0.125),), "linear", short)
    assert "not yet a candidate" in score._default_vs_choice(other)[-1]
    longer = sb.Setting("loss_edge", (("fraction", 1 / 6), ("budget_power", 0.25)), "linear", 1)
    assert "not yet a candidate" in score._default_vs_choice(longer)[-1]  # another test length


def test_a_candidate_default_is_judged_by_the_criterion_set_before_its_rows_ran(monkeypatch, score):
    default = {"rule": "loss_edge", "fraction": 0.25}
    monkeypatch.setattr(score, "DEFAULT", default)
    monkeypatch.setattr(sb, "CANDIDATE_DEFAULTS", ({"rule": "loss_edge", "fraction": 0.5},))
    old, new = sb.as_rule(default), ("loss_edge", (("fraction", 0.5),))
    tasks = ["a", "b"]

    def verdict(mine, theirs):
        as_outcomes = [{t: score.Outcome(*o) for t, o in d.items()} for d in (mine, theirs)]
        outcome = dict(zip((new, old), as_outcomes))
        (line,) = [x for x in score._candidate_verdicts(outcome, tasks) if x]
        return line

    # one task trained by both, one seed of the other: not decided
    partial = verdict({"a": (True, 0.1, 2), "b": (True, 0.1, 1)}, {"a": (False, 0.5, 2)})
    assert "not decided until every task is trained (1 of 2)" in partial
    assert "targets met on 1 (default 0)" in partial
    both = {"a": (False, 0.5, 2), "b": (True, 0.2, 2)}
    assert "replaces the default" in verdict({"a": (True, 0.3, 2), "b": (True, 0.4, 2)}, both)
    # as many targets met but more lost in total: the default stays
    assert "the default stays" in verdict({"a": (True, 0.6, 2), "b": (False, 0.2, 2)}, both)


def test_default_range_test_follows_the_chosen_test_and_the_optimizer(monkeypatch):
    from superconv import suggest as suggest_module
    from superconv.suggest import RAMPS, default_range_test

    monkeypatch.setattr(
        suggest_module,
        "DEFAULT_TEST",
        {"mode": "exp", "fraction": 0.04, "min_steps": 30, "repeats": 3},
    )
    sgd = default_range_test("sgd", 1758)
    assert (sgd["mode"], sgd["start_lr"], sgd["end_lr"]) == ("exp", *RAMPS["sgd"]["exp"])
    assert sgd["num_steps"] == 71 and sgd["repeats"] == 3  # ceil(4% of 1,758)
    assert default_range_test("nesterov", 100)["num_steps"] == 30  # the floor
    assert default_range_test("sgd")["num_steps"] == 30  # no budget: the floor
    adamw = default_range_test("adamw", 1719)
    assert (adamw["start_lr"], adamw["end_lr"]) == RAMPS["adaptive"]["exp"]
    assert [r.start_lr for r in sb.SGD_RAMPS] == [v[0] for v in RAMPS["sgd"].values()]
    with pytest.raises(UserError, match="budget"):
        default_range_test("sgd", 0)


def test_the_tolerance_pools_seed_noise_near_the_best_only():
    task = sb.get_task("t8-resnet20-10k")

    def point(lr, seed, acc):
        return sb.SweepPoint(lr, seed, acc, acc, False, f"x/{lr}/{seed}")

    points = [point(0.2, 0, 78.0), point(0.2, 1, 79.0), point(0.4, 0, 79.5)]
    points += [point(1.6, 0, 55.0), point(1.6, 1, 68.0)]  # half broken down: 13 points apart
    grid = sb.grid_of(task, points)
    assert grid.best_lr == 0.4
    # only 0.2 (within 2x of the best) is pooled: variance 0.5 on 1 dof, 1 seed at the best
    assert grid.se == pytest.approx(math.sqrt(0.5))
    assert sb.tolerance(grid) == pytest.approx(max(1.0, 2 * math.sqrt(0.5)))


def test_fits_check_replayed_on_first_rung_runs_picks_by_the_short_runs():
    """The replay scores each candidate by the short runs (log-LR interpolation), picks
    the best there and charges the full budget's loss at that pick; above a diverged top
    a candidate diverges too; when every candidate diverges nothing is picked."""
    grid = sb.Grid(
        lrs=(0.05, 0.1, 0.2, 0.4, 0.8),
        means=(90.0, 94.0, 95.0, 93.0, 10.0),
        counts=(1, 2, 2, 2, 1),
        diverged=(False, False, False, False, True),
        best_lr=0.2,
        best=95.0,
        se=0.2,
        test_at_best=95.0,
    )
    short = {0.05: 80.0, 0.1: 84.0, 0.2: 83.0, 0.4: 70.0, 0.8: 10.0}  # short runs favour 0.1
    r = sb.replay_check("t", grid, short, 0.2, (2.0, 1.0, 0.5, 0.25), chance=10.0)
    assert r.pick == pytest.approx(0.1) and r.lost == pytest.approx(1.0)
    assert r.ratio == pytest.approx(0.5) and r.met and r.acc_met  # 1 point: the tolerance
    # x1 lands halfway in log LR between 0.1 (84) and 0.2 (83): 83.5, above x2 (76.5,
    # halfway to 0.4's 70) and x4 (40, halfway to 0.8's chance)
    mid = sb.replay_check("t", grid, short, math.sqrt(0.02), (4.0, 2.0, 1.0), chance=10.0)
    assert mid.pick == pytest.approx(math.sqrt(0.02))
    assert mid.lost == pytest.approx(95.0 - (94.0 + 95.0) / 2)
    # above the diverged top (0.8): scored as chance, so never picked over a trained one
    high = sb.replay_check("t", grid, short, 0.8, (2.0, 1.0, 0.5), chance=10.0)
    assert high.pick == pytest.approx(0.4) and high.lost == pytest.approx(2.0) and not high.met
    dead = sb.replay_check("t", grid, short, 1.6, (4.0, 2.0, 1.0), chance=10.0)
    assert dead.pick is None and dead.lost is None and not dead.acc_met
    below = sb.replay_check("t", grid, short, 0.001, (2.0, 1.0), chance=10.0)
    assert below.pick is None  # below the recorded runs: no score, left out
    # the candidate set chosen leave-one-task-out, ties to the set listed first
    replays = [
        sb.Replay(task, f, 0, 0.1, 0.1, lost, 1.0, lost <= 1, lost <= 1)
        for task in ("a", "b")
        for f, lost in zip(sb.CHECK_FACTOR_SETS, (2.0, 0.5, 0.5, 3.0, 0.2))
    ]
    replays[4] = sb.Replay("a", sb.CHECK_FACTOR_SETS[-1], 0, 0.1, 0.1, 5.0, 1.0, False, False)
    assert sb.CHECK_FACTOR_SETS[0] == FACTORS
    # the accuracy target first (the last set misses it on "a"), then the least lost; of
    # the two sets tied on both, the earlier
    assert sb.choose_factors(replays) == sb.CHECK_FACTOR_SETS[1]
    assert sb.choose_factors(replays, exclude="a") == sb.CHECK_FACTOR_SETS[-1]
    held = sb.factors_left_out(replays)
    # chosen on "b" alone, the last set; held out on "a" it loses 5 points: the miss shows
    assert held["a"][0] == sb.CHECK_FACTOR_SETS[-1] and held["a"][1]["acc_met"] == 0.0
    assert held["b"][0] == sb.CHECK_FACTOR_SETS[1] and held["b"][1]["acc_met"] == 1.0
    # fit's choice looks both ways: x8..x1 (never below the suggestion) is best here on
    # every task, but only chosen when the condition is dropped
    assert sb.looks_both_ways(FACTORS) and not sb.looks_both_ways((8.0, 4.0, 2.0, 1.0))
    assert not sb.looks_both_ways((1.0, 0.5, 0.25, 0.125))
    one_way = [
        sb.Replay(r.task, r.factors, 0, 0.1, 0.1, 0.1, 1.0, True, True)
        if r.factors == (8.0, 4.0, 2.0, 1.0)
        else r
        for r in replays
    ]
    assert sb.choose_factors(one_way, both_ways=False) == (8.0, 4.0, 2.0, 1.0)
    assert sb.choose_factors(one_way) == sb.CHECK_FACTOR_SETS[1]
    assert {f for f, _ in sb.factors_left_out(one_way).values()} <= {
        f for f in sb.CHECK_FACTOR_SETS if sb.looks_both_ways(f)
    }


def test_what_the_curve_lacks_is_a_minimax_over_the_budget_power(score):
    from types import SimpleNamespace

    edge = next(
        s for s in sb.settings() if s.label == score._default_label({"rule": "loss_edge", "fraction": 1.0})
    )

    def lacks(tasks):  # name -> (budget, loss edge, swept best)
        data = {
            n: {"grid": SimpleNamespace(best_lr=best), "task": SimpleNamespace(budget=b)}
            for n, (b, _, best) in tasks.items()
        }
        scores = [
            sb.Score(n, edge, seed, e * k, None, None, False, False)
            for n, (_, e, _) in tasks.items()
            for seed, k in enumerate((0.5, 1.0, 2.0))  # the median is the middle seed's
        ]
        return "\n".join(score._curve_lacks(data, scores))

    # the best at 0.1x the edge on one task, 1.0x on another of the same budget: 10x apart,
    # and no power of the budget can close that
    text = lacks({"a": (1000, 1.0, 0.1), "b": (1000, 0.5, 0.5)})
    assert "| a | 1,000 | 1 | 0.1 | 0.1 |" in text and "| b | 1,000 | 0.5 | 0.5 | 1 |" in text
    assert "spans 10.0x" in text and "no fraction and budget power" in text
    # the same spread explained by the budget (the ratio grows with it): the power -1 removes it
    text = lacks({"a": (1000, 1.0, 0.1), "b": (8000, 1.0, 0.8)})
    assert "spans 8.0x" in text and "(-1.00," in text and "still spans 1.0x" in text
    assert "could be within 2x on every task" in text
    assert lacks({"a": (1000, 1.0, 0.1)}) == ""  # one task: nothing to compare


def test_the_docs_table_shows_what_score_json_says(score):
    """docs/choosing-max-lr.md's headline table is written by the scorer, never typed in:
    it must match the committed score.json (rerun `python benchmarks/suggest/score.py
    --docs docs/choosing-max-lr.md` after new runs)."""
    page = (ROOT / "docs" / "choosing-max-lr.md").read_text(encoding="utf-8")
    block = page.split(score.DOCS_START, 1)[1].split(score.DOCS_END, 1)[0]
    headline = json.loads((ROOT / "results" / "suggest" / "score.json").read_text())["headline"]
    assert block == "\n" + score.docs_table(headline), "stale: rerun score.py --docs"
    assert headline[0]["setting"].startswith("superconv, held out") and headline[0]["n"] >= 27


def test_the_docs_block_is_rewritten_between_its_markers_only(tmp_path, score):
    page = tmp_path / "page.md"
    page.write_text(f"# t\n\nbefore\n{score.DOCS_START}\nold\n{score.DOCS_END}\nafter\n")
    row = {"setting": "x", "n": 3, "met": 1 / 3, "within_2x": 2 / 3, "median_log2_ratio": 1.0,
           "mean_lost": 0.5, "diverged": 0, "no_suggestion": 1}  # fmt: skip
    score._write_docs_block(page, [row])
    text = page.read_text()
    assert text.startswith("# t\n\nbefore\n") and text.endswith(f"{score.DOCS_END}\nafter\n")
    assert "| x | 3 | 33% | 67% | 2x | 0.50 | 0 | 1 |" in text and "old" not in text
    page.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no score block"):
        score._write_docs_block(page, [row])
