"""The project's own experiments, beside the paper's: the fair comparison (1cycle against
tuned baselines at equal budgets, and the product: ``superconv fit``, schedule-free SGD,
Prodigy, the default rule) and the suggestion benchmark (range-test rules scored against
1cycle max_lr sweeps; its tasks live in :mod:`superconv.suggest_bench`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from superconv.config import TrainConfig
from superconv.paper.scales import Scale
from superconv.plan import Fit, Plan, RangeTest, Step, Sweep, Train, Tuned, as_rule, rule_label


@dataclass(frozen=True)
class _Setting:
    """The fair comparison at one scale: its data split, model, budgets and cadence."""

    scale: str
    model: str
    val_size: int
    budgets: tuple[int, int] | None  # epochs (None: the small scale's iteration counts)
    short: int  # iterations at the smaller and the larger budget
    long: int
    rt_steps: int  # the range test's length
    base: TrainConfig
    evals: int  # evaluations per run

    @property
    def train_images(self) -> int:
        return 50_000 - self.val_size

    def cfg(self, iterations: int, policy: str, params: Mapping[str, Any], **kw) -> TrainConfig:
        every = max(1, math.ceil(iterations / self.evals))
        return self.base.replace(
            iterations=iterations,
            eval_every=every,
            checkpoint_every=every,
            policy=policy,
            policy_params=dict(params),
            **kw,
        )


def _setting(s: Scale) -> _Setting:
    # The skeptic's critique: tuned baselines, equal budgets, error bars, warm-up + cosine.
    # The budgets: about 5 and 15 epochs, at full and at reduced scale alike.
    budgets = {"full": (5, 15), "reduced": (5, 15), "small": None}[s.name]
    val_size = 1_000 if s.name == "small" else 5_000
    train_images = 50_000 - val_size
    if budgets is None:
        short, long, rt_steps = 40, 120, 30
    else:
        short, long = (math.ceil(e * train_images / 128) for e in budgets)
        rt_steps = math.ceil(train_images / 128)  # one epoch
    model = "resnet8" if s.name == "small" else "resnet20"
    base = TrainConfig(
        model=model,
        batch_size=128,
        momentum=0.9,
        weight_decay=1e-4,
        crop_pad=4,  # flip + pad-4 crop for every policy
        val_size=val_size,
        eval_batch_size=1000,
    )
    evals = 4 if s.name == "small" else 12
    return _Setting(s.name, model, val_size, budgets, short, long, rt_steps, base, evals)


def _warmup(iterations: int) -> dict[str, Any]:
    return {"warmup_steps": max(1, iterations // 10)}  # 10% linear warm-up, then cosine to 0


# Factors of 2 around the usual 0.1. A skeptic's sweep must bracket its optimum:
# multistep's first five trials put the best at 0.05, the lower edge, so its grid
# was extended by 0.0125 and 0.025; warm-up + cosine's best (0.2) already had lower
# validation accuracy on both sides, so its grid stayed.
_GRID = (0.05, 0.1, 0.2, 0.4, 0.8)
_GRIDS = {"multistep": (0.0125, 0.025, *_GRID), "warmup_cosine": _GRID}
# 1cycle tuned like the baselines, to tell the schedule from the range test's pick:
# max_lr by the same kind of sweep, min_lr = max_lr / 4 as suggest() gives.
_ONECYCLE_GRID = (0.1, 0.2, 0.4, 0.8, 1.6)


def fair_comparison(s: Scale) -> Plan:
    """1cycle against tuned baselines at equal budgets: the tuning steps, the compared rows
    at each budget and on limited data, then the product's rows (issue 22, item 6)."""
    st = _setting(s)
    steps: list[Step] = _tuning_steps(st)
    labels = (
        {"full": "5ep", "reduced": "5ep", "small": "40it"}[s.name],
        {"full": "15ep", "reduced": "15ep", "small": "120it"}[s.name],
    )
    runs = [(st.short, labels[0], None), (st.long, labels[1], None)]
    runs += [(st.short, f"{labels[0]}-{n // 1000}k", n) for n in (10_000, 20_000)]
    for iterations, label, subset in runs:
        steps += _compared_rows(st, iterations, label, subset)
    # Issue 22, item 6: the comparison rerun with the product, appended after every
    # committed step (none of which changes): at the smaller and larger budget and on the
    # 10k subset, not 20k. At the larger budget 2 seeds ("a third only where the result
    # falls inside the band": raise that row's seeds to 3 then, in _THIRD_SEED).
    product = [(st.short, labels[0], None, None), (st.long, labels[1], None, 2)]
    product += [(st.short, f"{labels[0]}-10k", 10_000, None)]
    for iterations, label, subset, seeds in product:
        steps += _product_rows(st, iterations, label, subset, seeds)
    return Plan(s.name, tuple(steps), _notes(st, [p[1] for p in product]))


def _tuning_steps(st: _Setting) -> list[Step]:
    """The range test and the sweeps the compared rows take their LRs from."""
    short = st.short
    range_test = RangeTest(
        "range-test",
        st.base.replace(iterations=st.rt_steps),
        evaluate_on="val",
        eval_points=10 if st.scale == "small" else 30,
        seeds=1,
        note="picks 1cycle's range by suggest(): max_lr where validation accuracy falls, min_lr = max/4",
    )
    return [
        range_test,
        Sweep("sweep-multistep", st.cfg(short, "multistep", {}), "lr", _GRIDS["multistep"]),
        Sweep(
            "sweep-warmup_cosine",
            st.cfg(short, "warmup_cosine", _warmup(short)),
            "max_lr",
            _GRIDS["warmup_cosine"],
        ),
        Sweep("sweep-onecycle", st.cfg(short, "one_cycle", {"div": 4}), "max_lr", _ONECYCLE_GRID),
    ]


def _compared_rows(st: _Setting, iterations: int, label: str, subset: int | None) -> list[Step]:
    """1cycle (range-test and sweep tuned), multistep and warm-up + cosine at one budget."""
    extra = {} if subset is None else {"train_subset": subset}
    cfg = st.cfg
    onecycle = (Tuned("max_lr", "range-test", "max_lr"), Tuned("div", "range-test", "div"))
    return [
        Train(
            f"onecycle-{label}",
            cfg(iterations, "one_cycle", {}, **extra),
            tuned=onecycle,
            note="1cycle, range from the range test's suggestion",
        ),
        Train(
            f"onecycle_swept-{label}",
            cfg(iterations, "one_cycle", {"div": 4}, **extra),
            tuned=(Tuned("max_lr", "sweep-onecycle"),),
            note="1cycle, max_lr by a sweep as the baselines' (min_lr = max_lr / 4)",
        ),
        Train(
            f"multistep-{label}",
            cfg(iterations, "multistep", {}, **extra),
            tuned=(Tuned("lr", "sweep-multistep"),),
            note="x0.1 at 50% and 75%, lr by the sweep",
        ),
        Train(
            f"warmup_cosine-{label}",
            cfg(iterations, "warmup_cosine", _warmup(iterations), **extra),
            tuned=(Tuned("max_lr", "sweep-warmup_cosine"),),
            note="10% warm-up, cosine to 0, max_lr by the sweep",
        ),
    ]


# 2-seed product rows whose result fell inside the report's band against a compared row,
# so they get the third seed the issue asks for (any product row by name, applied in
# _product_rows): fit-15ep tied tuned warm-up + cosine (-0.03, band +-0.14) on 2 seeds;
# schedulefree-15ep (-1.75, band +-1.89) and prodigy-15ep (+1.17, band +-1.97) tied the
# old range-test row onecycle-15ep on 2 seeds (and lost to every product row).
_THIRD_SEED = frozenset({"fit-15ep", "schedulefree-15ep", "prodigy-15ep"})


def _product_rows(
    st: _Setting, iterations: int, label: str, subset: int | None, seeds: int | None
) -> list[Step]:
    """The product at one budget: the default rule's 1cycle, fit, schedule-free SGD, Prodigy."""
    extra = {} if subset is None else {"train_subset": subset}
    cfg = st.cfg
    steps = default_rule_rows(st.base, cfg(iterations, "one_cycle", {}, **extra), label, seeds)
    steps += [
        Fit(
            f"fit-{label}",
            cfg(iterations, "one_cycle", cycle_shape(), **extra),
            seeds=seeds,
            note="superconv fit: range test + check (successive halving) + the chosen "
            "1cycle; cost includes the tuning",
        ),
        Train(
            f"schedulefree-{label}",
            cfg(
                iterations,
                "constant",
                {"lr": SCHEDULEFREE_LR},
                optimizer="schedulefree_sgd",
                **extra,
            ),
            seeds=seeds,
            note="schedule-free SGD, lr 1.0, its own 5% warm-up, no schedule, BN "
            "recomputed at its average before each evaluation",
        ),
        Train(
            f"prodigy-{label}",
            cfg(iterations, "cosine", {"max_lr": PRODIGY_LR}, optimizer="prodigy", **extra),
            seeds=seeds,
            note="Prodigy, lr 1.0 with cosine annealing to 0 over the run",
        ),
    ]
    return [replace(step, seeds=3) if step.name in _THIRD_SEED else step for step in steps]


def _notes(st: _Setting, product_labels: list[str]) -> tuple[str, ...]:
    """What the plan's report says of its setting, budgets, tuning and product rows."""
    budgets, short, long = st.budgets, st.short, st.long
    budget_text = (
        f"~{budgets[0]} and ~{budgets[1]} epochs ({short:,} and {long:,} iterations)"
        if budgets
        else f"{short} and {long} iterations"
    )
    notes = (
        f"{st.scale}: CIFAR-10, {st.model}, batch 128, SGD momentum 0.9 (1cycle cycles it 0.95-0.85), "
        f"weight decay 1e-4, flip + pad-4 crop for every policy, BN MAF 0.95; {st.val_size:,} "
        f"training images held out for validation (all runs train on the other {st.train_images:,}).",
        f"Budgets: {budget_text}. Each baseline's peak LR is the best value of its sweep "
        "("
        + "; ".join(f"{p}: {', '.join(f'{v:g}' for v in g)}" for p, g in _GRIDS.items())
        + ") by final validation accuracy at the smaller budget (seed 0), reused at the larger "
        "budget and for limited data. Multistep's grid reaches lower because its best value "
        "first sat at 0.05, the lower edge of the common grid.",
        f"1cycle's range comes from suggest() on one {st.rt_steps}-iteration range test 0 -> 3.0 "
        "evaluated on the validation split (seed 0): the `onecycle-*` rows, the issue's policy.",
        "The `onecycle_swept-*` rows (added after the first range-test-tuned 1cycle run "
        "ended far below the baselines) take 1cycle's max_lr from a sweep like the baselines' "
        f"({', '.join(f'{v:g}' for v in _ONECYCLE_GRID)}; min_lr = max_lr / 4 as suggest() "
        "gives), to tell the 1cycle schedule from the range test's choice of LR.",
        "Limited data: class-balanced 10k and 20k subsets of the training split at the smaller "
        "budget's iteration count.",
        "Tuning cost (sweep and range-test iterations and images) is reported beside the results.",
        "Seed 0 of a swept row at the smaller budget repeats the sweep's winning trial (same "
        "seed, data and config: on the CPU the same run, bit for bit), so that seed was picked "
        "for its validation accuracy; seeds 1 and 2 carry no such selection.",
    )
    notes += (
        f"Rerun with the product (issue 22, item 6; {', '.join(product_labels)}): "
        "`fit-*` runs `superconv fit` (its own range test and budget-matched check, then "
        "the chosen 1cycle) and is charged its tuning; `schedulefree-*` (schedule-free SGD, "
        "lr 1.0, 5% warm-up inside the optimizer, BN statistics recomputed at its average "
        "before each evaluation and checkpoint) and `prodigy-*` (Prodigy, lr 1.0, cosine to "
        "0, weight decay 1e-4 as an L2 penalty like the baselines') tune nothing; "
        "`onecycle_<rule label>-*` (the rule with its constants) train 1cycle at the default "
        "rule's suggestion from a range test on that budget's data, once a default range test is chosen "
        "(superconv.suggest.DEFAULT_TEST). Recipes: docs/fair-comparison.md.",
        "At the larger budget these rows have 2 seeds: a third only where the result falls "
        "inside the band (rows with a third: " + ", ".join(sorted(_THIRD_SEED)) + ").",
    )
    if st.scale != "small":
        notes += (
            "This comparison is specified at CPU scale (ResNet-20, batch 128): `reduced` and "
            "`full` are the same plan here.",
        )
    return notes


# The rows users pick instead of tuning an LR (docs/fair-comparison.md gives each number's
# source): schedule-free SGD at its class default lr 1.0 (its README: "a learning rate 10x-50x
# larger than classical rates", 10x the usual 0.1); Prodigy at lr 1.0 ("We recommend using
# lr=1. (default) for all networks"), with the cosine annealing its README recommends.
SCHEDULEFREE_LR = 1.0
PRODIGY_LR = 1.0


def cycle_shape() -> dict[str, Any]:
    """The one_cycle parameters of superconv.suggest.CYCLE, max_lr left to be filled."""
    from superconv.suggest import CYCLE

    return {k: v for k, v in CYCLE.policy_params(1.0).items() if k != "max_lr"}


def default_rule_rows(
    base: TrainConfig, row: TrainConfig, label: str, seeds: int | None
) -> list[Step]:
    """``onecycle_<rule label>-<label>`` (``onecycle_loss_edge-bp0.25-f0.167-5ep``): 1cycle
    (superconv.suggest.CYCLE) at the default rule's suggestion, read from seed 0 of a range
    test of the default test's ramp and length on the row's own data (``row``: its budget, subset and cadence). None until a default test
    is chosen (``DEFAULT_TEST``), as the suggestion benchmark's confirmation rows."""
    from superconv import suggest
    from superconv.suggest_bench import RANGE_EVAL_IMAGES

    if suggest.DEFAULT_TEST is None:
        return []
    rule, constants = as_rule(suggest.DEFAULT)
    # named by the rule with its constants, so that rows trained at another default's
    # suggestion keep their own names (and are not taken for a different plan)
    named = rule_label((rule, constants))
    test = suggest.default_range_test(row.optimizer, row.iterations)
    length = test["num_steps"]
    extra = {} if row.train_subset is None else {"train_subset": row.train_subset}
    source = RangeTest(
        f"range-test-{named}-{label}",
        base.replace(iterations=length, **extra),
        start_lr=test["start_lr"],
        end_lr=test["end_lr"],
        mode=test["mode"],
        evaluate_on="val",
        eval_points=max(1, min(20, length // 3)),  # as the benchmark the rule was chosen on
        eval_batches=max(1, RANGE_EVAL_IMAGES // base.eval_batch_size),
        seeds=1,
        note=f"the default test ({test['mode']} ramp, {length} iterations) read by the default "
        f"rule {rule!r} for a {row.iterations}-iteration budget",
        rule=(rule, constants),
        budget=row.iterations,
    )
    trained = Train(
        f"onecycle_{named}-{label}",
        row.replace(policy_params=cycle_shape()),
        tuned=(Tuned("max_lr", source.name, "max_lr"),),
        seeds=seeds,
        note=f"1cycle at the default rule's ({rule}) suggestion from {source.name}",
    )
    return [source, trained]


def suggestion_benchmark(s: Scale) -> Plan:
    from superconv import suggest_bench

    steps = suggest_bench.plan_steps(small=s.name == "small")
    notes = (
        "Tasks, grids and ramps: superconv.suggest_bench (benchmarks/suggest/README.md). Every "
        "sweep trains the one cycle shape of superconv.suggest.CYCLE (start at max/4, 30% up, "
        "cosine down to max/4e4, momentum 0.95-0.85), scored on validation accuracy.",
        "Sweep points the fair comparison already trained in that shape are reused by the "
        "scorer (benchmarks/suggest/score.py), not rerun here.",
    )
    if s.name == "small":
        notes += ("small = the mnist-demo task only, a tenth of its budget: a smoke test.",)
    return Plan(s.name, steps, notes)
