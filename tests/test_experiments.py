"""The registry against the paper (REFERENCE.md typed in as the oracle) and reproduce() end to end.

The end-to-end tests run the real ``mnist-lenet`` entry at the small scale (LeNet on
the MNIST subset shipped in the package, tens of iterations) three times in one
folder: a first call killed mid-run, a second that resumes it, a third that must
train nothing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from superconv import paper, runner
from superconv import train as train_mod
from superconv.errors import UserError
from superconv.models import build_model
from superconv.plan import NO_REFERENCE, Fit, Plan, RangeTest, Step, Sweep, pick_best
from superconv.runs import DONE
from superconv.schedules import build_policy
from superconv.train import TrainConfig

MNIST = "mnist-lenet"


# ----------------------------------------------------------------------------- helpers
def final_configs(plan: Plan) -> list[tuple[str, TrainConfig]]:
    """Every config the plan trains, tuned parameters filled with placeholder values."""
    placeholders: dict[str, dict[str, float]] = {}
    out = []
    for step in plan.steps:
        if isinstance(step, Sweep):
            placeholders[step.name] = {"best": step.values[0]}
            out += [(t.name, t.config) for t in step.trials()]
        elif isinstance(step, RangeTest):
            placeholders[step.name] = {
                "max_lr": 1.0,
                "min_lr": 0.25,
                "min_lr_steepest": 0.1,
                "div": 4.0,
            }
            out.append((step.name, step.config))
        elif isinstance(step, Fit):  # fit chooses max_lr: a placeholder, as for a sweep
            params = {**dict(step.config.policy_params), "max_lr": 1.0}
            out.append((step.name, step.config.replace(policy_params=params)))
        else:  # a row reading a test by its own rule keeps the value under its key
            keyed = {t.key: placeholders[t.source] for t in step.tuned}
            out.append((step.name, step.resolve({**placeholders, **keyed})))
    return out


def rows(exp_id: str, scale: str = "full") -> dict[str, Step]:
    return {s.name: s for s in paper.get_experiment(exp_id).plan(scale).steps}


def lr_at(config: TrainConfig, step: int) -> float:
    return build_policy(config.policy, config.iterations, **dict(config.policy_params))["lr"](step)


# ----------------------------------------------------------------------------- the registry
def test_registry_is_read_only_and_lists_the_paper_items():
    registry = paper.EXPERIMENTS
    assert set(paper.experiment_ids()) >= {
        "table1-clr-range", "table1-maf", "table1-limited-data", "fig1", "fig2b", "fig4",
        "fig5a", "fig5b", "fig6", "fig7", "fig8", "table5", "table6", "fig11", MNIST,
        "fair-comparison",
    }  # fmt: skip
    with pytest.raises(TypeError):
        registry["new"] = registry["fig1"]  # type: ignore[index]


def test_unknown_experiment_and_scale_are_user_errors_with_hints():
    with pytest.raises(
        UserError, match=r"unknown experiment 'tabel1-maf'; did you mean 'table1-maf'\?"
    ):
        paper.get_experiment("tabel1-maf")
    with pytest.raises(
        UserError,
        match="it is split into 'table1-clr-range', 'table1-maf', 'table1-limited-data'",
    ):
        paper.get_experiment("table1")
    with pytest.raises(UserError, match="Known: table1-clr-range"):
        runner.reproduce(paper.get_experiment("no-such-thing"), dry_run=True)
    with pytest.raises(UserError, match=r"unknown scale 'smal'; did you mean 'small'\?"):
        paper.get_experiment("fig1").plan("smal")
    with pytest.raises(UserError, match="Choose one of: small, reduced, full"):
        runner.reproduce(paper.get_experiment("fig1"), scale="huge", dry_run=True)
    with pytest.raises(UserError, match="seeds must be an integer >= 1"):
        runner.reproduce(paper.get_experiment("fig1"), seeds=0, dry_run=True)


@pytest.mark.parametrize("scale", ["full", "reduced", "small"])
def test_every_entry_validates_without_loading_data(scale):
    models = set()
    for exp_id in paper.experiment_ids():
        plan = paper.get_experiment(exp_id).plan(scale)
        names = [s.name for s in plan.steps]
        assert len(names) == len(set(names)), exp_id
        assert plan.notes, f"{exp_id}: the scale's choices must be documented"
        seen = set()
        for step in plan.steps:
            for t in getattr(step, "tuned", ()):
                assert t.source in seen, f"{exp_id}/{step.name} takes {t.param} from a later step"
                source = plan.step(t.source)
                assert (t.field == "best") == isinstance(source, Sweep)
            if isinstance(step, Sweep):
                # the suggestion benchmark's grids are completed by reused runs (test_suggest)
                assert step.config.val_size > 0 and (len(step.values) >= 4 or exp_id == "suggest")
            if isinstance(step, RangeTest) and step.evaluate_on == "val":
                assert step.config.val_size > 0
            seen.add(step.name)
        for _, config in final_configs(plan):
            config.validate()
            build_policy(config.policy, config.iterations, **dict(config.policy_params))
            models.add((config.model, config.dataset))
    for model, dataset in models:  # every model name resolves (built once each, no data)
        channels = 1 if "mnist" in dataset else 3
        build_model(model, num_classes=100 if dataset == "cifar100" else 10, in_channels=channels)


# The paper's ResNet-56 / CIFAR-10 setting (REFERENCE.md "Paper setup"), typed in as the oracle.
PAPER = dict(
    model="resnet56", dataset="cifar10", batch_size=1000, ghost_batch=125, optimizer="sgd",
    momentum=0.9, weight_decay=1e-4, bn_mode="caffe", flip=True, crop_pad=0,
)  # fmt: skip


def assert_paper_setting(config: TrainConfig, **expected):
    for key, value in {**PAPER, **expected}.items():
        assert getattr(config, key) == value, (key, getattr(config, key), value)


def assert_clr(config: TrainConfig, min_lr: float, max_lr: float, iterations: int):
    assert config.policy == "clr" and config.iterations == iterations
    assert lr_at(config, 0) == pytest.approx(min_lr)
    assert lr_at(config, iterations // 2) == pytest.approx(max_lr)  # stepsize = half the run
    assert lr_at(config, iterations - 1) == pytest.approx(min_lr, abs=max_lr / iterations * 2)


def assert_pc(config: TrainConfig, iterations: int = 80_000):
    # PC-LR: 0.35, x0.1 at 50k and 70k of 80k iterations, MAF 0.999.
    assert config.iterations == iterations and config.bn_maf == 0.999
    assert lr_at(config, 49_999) == pytest.approx(0.35)
    assert lr_at(config, 50_000) == pytest.approx(0.035)
    assert lr_at(config, 70_000) == pytest.approx(0.0035)


def test_full_table1_matches_the_paper():
    clr_range = rows("table1-clr-range")
    assert sorted(s.config.policy_params["max_lr"] for s in clr_range.values()) == [
        1,
        1.5,
        2,
        2.5,
        3,
        3.5,
    ]
    for step in clr_range.values():
        assert_paper_setting(step.config, bn_maf=0.95)
        assert_clr(step.config, 0.1, step.config.policy_params["max_lr"], 10_000)
    maf = rows("table1-maf")
    pairs = {(s.config.bn_maf, s.config.iterations) for s in maf.values()}
    assert pairs >= {
        (0.97, 20_000),
        (0.95, 10_000),
        (0.93, 8_000),
        (0.90, 6_000),
        (0.85, 4_000),
        (0.80, 2_000),
    }
    for step in maf.values():
        assert_paper_setting(step.config)
        assert_clr(step.config, 0.1, 3.0, step.config.iterations)
    limited = rows("table1-limited-data")
    for n in (40_000, 30_000, 20_000, 10_000):
        pc, clr = limited[f"pc-{n // 1000}k"].config, limited[f"clr-{n // 1000}k"].config
        assert pc.train_subset == clr.train_subset == n
        assert_paper_setting(pc)
        assert_pc(pc)
        assert_paper_setting(clr, bn_maf=0.95)
        assert_clr(clr, 0.1, 3.0, 10_000)


def test_full_figures_match_the_paper():
    fig1 = rows("fig1")
    assert_clr(fig1["clr-0.1-3"].config, 0.1, 3.0, 10_000)
    assert_pc(fig1["pc-0.35"].config)
    fig2b = rows("fig2b")
    assert sorted(s.config.iterations for s in fig2b.values()) == [5_000, 20_000, 100_000]
    for step in fig2b.values():
        assert isinstance(step, RangeTest)
        assert (step.start_lr, step.end_lr, step.mode, step.evaluate_on) == (
            0.0,
            3.0,
            "linear",
            "test",
        )
        assert_paper_setting(step.config)
    assert {s.config.model for s in rows("fig4").values()} == {"resnet56", "resnet20", "resnet110"}
    for exp_id, k in (("fig5a", 1), ("fig5b", 10)):
        fig5 = rows(exp_id)
        assert {s.config.estimator_k for s in fig5.values()} == {k}
        assert lr_at(fig5["constant-0.1"].config, 1234) == 0.1
        assert_clr(fig5["clr-0.1-3"].config, 0.1, 3.0, 10_000)  # stepsize 5,000
    assert paper.get_experiment("fig5a").plan("full").estimates_window == 300
    fig6 = rows("fig6")
    for depth in (20, 110):
        assert fig6[f"clr-resnet{depth}"].config.model == f"resnet{depth}"
        assert_clr(fig6[f"clr-resnet{depth}"].config, 0.1, 3.0, 20_000)  # stepsize 10,000
        assert_pc(fig6[f"pc-resnet{depth}"].config)
    assert {s.config.dataset for s in rows("fig7").values()} == {"cifar100"}
    assert {s.config.model for s in rows("fig11").values()} == {
        "bottleneck56",
        "resnext",
        "densenet",
    }
    fig8 = rows("fig8")
    assert {s.config.optimizer for s in fig8.values()} == {
        "nesterov",
        "adadelta",
        "adagrad",
        "adam",
    }
    assert_clr(fig8["clr-nesterov"].config, 0.1, 3.0, 10_000)
    assert_pc(fig8["pc-nesterov"].config)


def test_full_tables_5_and_6_match_the_paper():
    table5 = rows("table5")
    for batch in (1536, 1000, 512, 256):
        config = table5[f"batch{batch}"].config
        assert (config.batch_size, config.ghost_batch) == (batch, batch // 8)  # 8 GPUs
        assert_clr(config, 0.1, 3.0, 10_000)
    assert table5["dropout0.2"].config.dropout == 0.2
    table6 = rows("table6")
    assert {s.config.momentum for s in table6.values()} >= {0.80, 0.85, 0.90, 0.95}
    assert {s.config.weight_decay for s in table6.values()} == {1e-3, 1e-4, 1e-5, 1e-6}


def test_full_mnist_is_caffes_lenet_solver():
    mnist = rows(MNIST)
    ref = mnist["caffe-reference-85ep"].config
    assert (ref.model, ref.dataset, ref.batch_size, ref.momentum, ref.weight_decay) == (
        "lenet",
        "mnist",
        64,
        0.9,
        5e-4,
    )
    assert ref.iterations == math.ceil(85 * 60_000 / 64)  # 85 epochs
    assert lr_at(ref, 0) == 0.01 and lr_at(ref, 10_000) == pytest.approx(
        0.01 * (1 + 1e-4 * 10_000) ** -0.75
    )
    assert mnist["onecycle-12ep"].config.iterations == 12 * 60_000 // 64
    assert mnist["onecycle-12ep"].config.policy == "one_cycle"
    assert isinstance(mnist["sweep-onecycle"], Sweep)


def test_full_fair_comparison_is_the_skeptics_setting():
    plan = paper.get_experiment("fair-comparison").plan("full")
    steps = {s.name: s for s in plan.steps}
    for name, config in final_configs(plan):
        assert (config.model, config.dataset, config.batch_size) == ("resnet20", "cifar10", 128), (
            name
        )
        # the rows users pick instead of tuning an LR (issue 22, item 6) bring their optimizer
        optimizer = {"schedulefree": "schedulefree_sgd", "prodigy": "prodigy"}.get(
            name.split("-")[0], "sgd"
        )
        assert (config.optimizer, config.momentum, config.weight_decay) == (optimizer, 0.9, 1e-4)
        assert (config.flip, config.crop_pad, config.val_size) == (True, 4, 5_000)
    short, long = math.ceil(5 * 45_000 / 128), math.ceil(15 * 45_000 / 128)
    sweeps = [s for s in plan.steps if isinstance(s, Sweep)]
    assert {s.config.policy for s in sweeps} == {"multistep", "warmup_cosine", "one_cycle"}
    assert all(len(s.values) >= 4 and s.config.iterations == short for s in sweeps)
    assert steps["range-test"].evaluate_on == "val"
    for policy, source in (
        ("multistep", "sweep-multistep"),
        ("warmup_cosine", "sweep-warmup_cosine"),
        ("onecycle", "range-test"),
        ("onecycle_swept", "sweep-onecycle"),
    ):
        for label, iterations, subset in (
            ("5ep", short, None),
            ("15ep", long, None),
            ("5ep-10k", short, 10_000),
            ("5ep-20k", short, 20_000),
        ):
            step = steps[f"{policy}-{label}"]
            assert step.config.iterations == iterations and step.config.train_subset == subset
            assert {t.source for t in step.tuned} == {source}
    for sweep in sweeps:  # every sweep brackets the usual values around 0.1 or 1cycle's ~1
        assert min(sweep.values) <= 0.1 and max(sweep.values) >= 0.8, sweep.name
    swept = steps["onecycle_swept-5ep"].resolve({"sweep-onecycle": {"best": 0.4}})
    assert swept.policy_params == {"div": 4, "max_lr": 0.4}
    multistep = steps["multistep-15ep"].resolve({"sweep-multistep": {"best": 0.2}})
    assert lr_at(multistep, long // 2 - 1) == 0.2 and lr_at(
        multistep, long // 2 + 1
    ) == pytest.approx(0.02)


def test_reduced_scale_settings():
    clr = rows("table1-clr-range", "reduced")["clr-0.1-3"].config
    assert (clr.model, clr.batch_size, clr.crop_pad, clr.flip, clr.ghost_batch) == (
        "resnet20",
        128,
        4,
        True,
        None,
    )
    assert_clr(clr, 0.1, 3.0, 1_200)  # ~3 epochs of 50k at batch 128
    assert 2.5 <= clr.iterations * 128 / 50_000 <= 3.5
    fig2b = rows("fig2b", "reduced")
    epochs = sorted(s.config.iterations * 128 / 50_000 for s in fig2b.values())
    assert epochs == pytest.approx([1, 4], abs=0.01)
    assert all(s.end_lr == 3.0 and s.start_lr == 0 for s in fig2b.values())
    assert paper.get_experiment("fig5a").plan("reduced").estimates_window == 300
    maf = rows("table1-maf", "reduced")
    assert maf["maf0.95-10k"].config.bn_maf == 0.95 and maf["maf0.999-10k"].config.bn_maf == 0.999
    assert maf["maf0.95-10k"].config.iterations == maf["maf0.999-10k"].config.iterations == 1_200
    assert (
        rows(MNIST, "reduced")["caffe-reference-85ep"].config
        == rows(MNIST, "full")["caffe-reference-85ep"].config
    )


# Published numbers from REFERENCE.md, typed in: (experiment, row) -> (paper, authors' log).
REFERENCE = {
    ("table1-clr-range", "clr-0.1-3.5"): (92.1, None),
    ("table1-clr-range", "clr-0.1-3"): (92.4, 92.44),
    ("table1-clr-range", "clr-0.1-2.5"): (92.3, None),
    ("table1-clr-range", "clr-0.1-2"): (91.7, None),
    ("table1-clr-range", "clr-0.1-1.5"): (90.9, None),
    ("table1-clr-range", "clr-0.1-1"): (91.3, None),
    ("table1-maf", "maf0.97-20k"): (92.7, None),
    ("table1-maf", "maf0.95-10k"): (92.4, 92.44),
    ("table1-maf", "maf0.93-8k"): (91.7, None),
    ("table1-maf", "maf0.9-6k"): (92.1, None),
    ("table1-maf", "maf0.85-4k"): (91.1, None),
    ("table1-maf", "maf0.8-2k"): (89.7, None),
    ("table1-limited-data", "pc-40k"): (89.1, 90.43),
    ("table1-limited-data", "clr-40k"): (91.1, 91.10),
    ("table1-limited-data", "pc-30k"): (85.7, 86.36),
    ("table1-limited-data", "clr-30k"): (89.6, 89.64),
    ("table1-limited-data", "pc-20k"): (82.7, 62.33),
    ("table1-limited-data", "clr-20k"): (87.9, 87.92),
    ("table1-limited-data", "pc-10k"): (71.4, 71.20),
    ("table1-limited-data", "clr-10k"): (80.6, 80.59),
    ("fig1", "clr-0.1-3"): (92.4, 92.44),
    ("fig1", "pc-0.35"): (91.2, 90.32),
    ("fig6", "clr-resnet20"): (90.4, 90.42),
    ("fig6", "pc-resnet20"): (88.6, 88.64),
    ("fig6", "clr-resnet110"): (92.1, 92.37),
    ("fig6", "pc-resnet110"): (91.0, 91.21),
    ("fig7", "clr-0.1-3"): (68.6, 68.2),
    ("fig7", "pc-0.35"): (59.8, 59.27),
    ("fig8", "clr-nesterov"): (92.1, 92.47),
    ("fig8", "clr-adam"): (None, 87.15),
    ("table5", "batch1536"): (92.1, None),
    ("table5", "batch1000"): (92.4, None),
    ("table5", "batch512"): (91.7, None),
    ("table5", "batch256"): (89.5, None),
    ("table6", "momentum0.8"): (92.1, 91.86),
    ("table6", "momentum0.85"): (91.9, 92.29),
    ("table6", "momentum0.9"): (92.4, 92.44),
    ("table6", "momentum0.95"): (90.7, 90.74),
    (MNIST, "onecycle-12ep"): (99.3, None),
    (MNIST, "caffe-reference-85ep"): (99.03, None),
}


@pytest.mark.parametrize("scale", ["full", "small"])
def test_published_numbers_equal_reference_md(scale):
    for (exp_id, row), expected in REFERENCE.items():
        ref = rows(exp_id, scale)[row].ref
        assert (ref.paper, ref.log) == expected, (exp_id, row)
        assert ref.source, (exp_id, row)
    # Rows the paper gives no number for carry none (shown as a dash, never invented).
    assert rows("fair-comparison")["onecycle-5ep"].ref == NO_REFERENCE
    assert rows("table6")["wd0.001"].ref.paper is None


def test_pick_best_uses_the_mean_and_never_a_diverged_value():
    assert pick_best({0.1: [90.0, 94.0], 0.2: [91.0, 91.0], 0.4: []}) == 0.1
    assert pick_best({0.1: [91.0], 0.2: [91.0]}) == 0.1  # ties: the first
    with pytest.raises(UserError, match="no value of the sweep finished"):
        pick_best({0.1: [], 0.2: []})


# ----------------------------------------------------------------------------- reproduce
class _Crash(Exception):
    pass


def _observer_crash(at: int):
    def observer(step, model, optimizer, metrics):
        if step == at:
            raise _Crash(f"simulated kill at iteration {at}")

    return observer


def _observer_nan(at: int):
    """Injects a real divergence: a NaN weight makes the next loss NaN."""

    def observer(step, model, optimizer, metrics):
        if step == at:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")

    return observer


def _summary_mtimes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/seed*/summary.json")
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Three reproduce() calls of mnist-lenet (small, 2 seeds) in one folder."""
    out = tmp_path_factory.mktemp("results")
    root = out / MNIST / "small"
    real_train = train_mod.train
    calls: list[dict] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: one thread is faster and steadier

    def wrapper(inject):
        def train(config, run_dir, *, observers=(), resume=False, progress=True):
            row, counter = Path(run_dir).parent.name, []
            extra = [lambda step, *a: counter.append(step)]
            extra += inject(row, config.seed)
            calls.append({"row": row, "seed": config.seed, "resume": resume, "steps": counter})
            return real_train(
                config, run_dir, observers=[*observers, *extra], resume=resume, progress=progress
            )

        return train

    def first(row, seed):  # kill seed 1 of a final row mid-way; make one sweep trial diverge
        if row == "onecycle-12ep" and seed == 1:
            return [_observer_crash(7)]
        if row == "sweep-inv-base_lr0.1":
            return [_observer_nan(2)]
        return []

    info: dict = {"root": root}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(train_mod, "train", wrapper(first))
            with pytest.raises(_Crash):
                runner.reproduce(paper.get_experiment(MNIST), seeds=2, scale="small", out=out, device="cpu", progress=False)
            info["first_calls"], calls[:] = list(calls), []
            info["after_kill"] = {
                p: runner._status(root / p) for p in ("onecycle-12ep/seed0", "onecycle-12ep/seed1")
            }
            info["manifest_after_kill"] = json.loads((root / "manifest.json").read_text())
            info["mtimes_after_kill"] = _summary_mtimes(root)
            mp.setattr(train_mod, "train", wrapper(lambda row, seed: []))
            info["runs"] = runner.reproduce(
                paper.get_experiment(MNIST), seeds=2, scale="small", out=out, device="cpu", progress=False
            )
            info["second_calls"], calls[:] = list(calls), []
            info["mtimes_after_second"] = _summary_mtimes(root)

            def must_not_train(*args, **kwargs):
                raise AssertionError("a finished run was trained again")

            mp.setattr(train_mod, "train", must_not_train)
            info["third_runs"] = runner.reproduce(
                paper.get_experiment(MNIST), seeds=2, scale="small", out=out, device="cpu", progress=False
            )
            info["mtimes_after_third"] = _summary_mtimes(root)
    finally:
        torch.set_num_threads(threads)
    return info


def test_killed_sweep_resumes_and_finished_runs_are_skipped(sweep):
    root = sweep["root"]
    assert sweep["after_kill"] == {
        "onecycle-12ep/seed0": "finished",
        "onecycle-12ep/seed1": "resume",
    }
    assert sweep["manifest_after_kill"]["invocations"][0]["finished"] is None
    second = {(c["row"], c["seed"]): c for c in sweep["second_calls"]}
    # Nothing that finished (or diverged) in the first call ran again ...
    assert not any(row.startswith("sweep-") for row, _ in second)
    assert ("onecycle-12ep", 0) not in second
    for key, mtime in sweep["mtimes_after_kill"].items():
        assert sweep["mtimes_after_second"][key] == mtime, key
    # ... the killed run resumed from its last checkpoint (iteration 6 of 12) ...
    resumed = second[("onecycle-12ep", 1)]
    assert resumed["resume"] is True and resumed["steps"] == list(range(6, 12))
    # ... and the rest started fresh and finished.
    assert {("inv-12ep-tuned", 0), ("inv-12ep-tuned", 1), ("caffe-reference-85ep", 1)} <= set(
        second
    )
    statuses = {str(p.relative_to(root)): runner._status(p) for p in sweep["runs"]}
    assert len(statuses) == 4 * 2 + 3 * 2  # two sweeps of 4 values (seed 0) + 3 rows x 2 seeds
    assert statuses["sweep-inv-base_lr0.1/seed0"] == "diverged"  # the injected divergence
    finals = [s for p, s in statuses.items() if not p.startswith("sweep-")]
    assert finals == ["finished"] * 6
    assert set(statuses.values()) <= {"finished", "diverged"}  # a trial may diverge by itself
    # The third call trained nothing and touched no run.
    assert sweep["third_runs"] == sweep["runs"]
    assert sweep["mtimes_after_third"] == sweep["mtimes_after_second"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert [inv["seeds"] for inv in manifest["invocations"]] == [2, 2, 2]
    assert all(inv["finished"] for inv in manifest["invocations"][1:])
    assert manifest["scale"] == "small" and manifest["experiment"] == MNIST
    assert {"commit", "device", "command", "started"} <= set(manifest["invocations"][0])


def test_diverged_trial_is_recorded_and_never_picked(sweep):
    root = sweep["root"]
    summary = json.loads((root / "sweep-inv-base_lr0.1/seed0/summary.json").read_text())
    assert summary["status"] == "diverged" and summary["iterations"] == 3
    # The pick is the best validation accuracy among the finished trials (oracle: the summaries).
    accs = {}
    for value in (0.003, 0.01, 0.03):
        s = json.loads((root / f"sweep-inv-base_lr{value:g}/seed0/summary.json").read_text())
        accs[value] = s["final_val_acc"]
    best = max(accs, key=accs.get)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["tuned"]["sweep-inv"] == {"best": best}
    for seed in (0, 1):
        config = json.loads((root / f"inv-12ep-tuned/seed{seed}/config.json").read_text())
        assert config["policy_params"]["base_lr"] == best
    assert manifest["tuning"]["sweep-inv"]["runs"] == 4
    report = (root / "report.md").read_text()
    assert re.search(
        r"\| 0\.1 \| 0 \| — \| — \| \*\*DIVERGED\*\* in 1 of 1 seeds: seed 0 at iteration 3", report
    )
    assert f"**picked base_lr = {best:g}**" in report


def test_report_of_the_sweep_has_paper_numbers_and_numpy_statistics(sweep):
    root = sweep["root"]
    report = (root / "report.md").read_text()
    for row, published in (("onecycle-12ep", 99.3), ("caffe-reference-85ep", 99.03)):
        accs = [
            json.loads((root / f"{row}/seed{k}/summary.json").read_text())["final_test_acc"]
            for k in (0, 1)
        ]
        mean, std = np.mean(accs), np.std(accs, ddof=1)
        line = next(line for line in report.splitlines() if line.startswith(f"| `{row}` |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "small" and cells[4] == "2"
        assert cells[5] == f"{mean:.2f} ± {std:.2f}"
        assert cells[6] == f"{published:.2f}" and cells[7] == "—"
        assert cells[8] == f"{mean - published:+.2f}"
    assert (root / "plots" / "test_acc.png").stat().st_size > 1000


def test_estimate_is_printed_before_starting_and_dry_run_writes_nothing(tmp_path, capsys):
    seconds = runner.estimate_wall_time(paper.get_experiment(MNIST), "small", "cpu", seeds=2)
    assert isinstance(seconds, float) and 0 < seconds < 3600
    runs = runner.reproduce(paper.get_experiment(MNIST), seeds=2, scale="small", out=tmp_path, device="cpu", dry_run=True)
    printed = capsys.readouterr().out
    assert re.search(
        r"Expected wall time on cpu .*: about \d+ (s|min)\. This is an estimate", printed
    )
    assert "14 runs: 0 done, 0 to resume, 14 to start" in printed
    assert len(runs) == 14 and all(str(run) in printed for run in runs)
    assert list(tmp_path.iterdir()) == []


def test_a_busy_cpu_gets_a_threads_hint_and_an_idle_one_or_a_gpu_none(monkeypatch):
    import torch

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    hint = runner._cpu_contention(cpu, load=1.0)
    assert "load average 1.0 on 2 cores" in hint and "--threads 1" in hint
    assert runner._cpu_contention(cpu, load=0.2) == ""
    assert runner._cpu_contention(cuda, load=5.0) == ""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert runner._cpu_contention(cpu, load=1.0) == ""  # one thread per run already


def test_finished_run_of_another_plan_is_refused(sweep, tmp_path):
    import shutil

    out = tmp_path / "results"
    shutil.copytree(sweep["root"], out / MNIST / "small")
    config_path = out / MNIST / "small" / "caffe-reference-85ep/seed0/config.json"
    config = json.loads(config_path.read_text())
    config["weight_decay"] = 0.0  # as if the registry had changed since the run
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        UserError, match=r"holds a finished run of a different plan \(differs in: weight_decay\)"
    ):
        runner.reproduce(paper.get_experiment(MNIST), seeds=2, scale="small", out=out, device="cpu", progress=False)


def test_only_runs_the_chosen_rows_with_what_they_are_tuned_from(tmp_path, capsys):
    out = tmp_path / "results"
    root = out / MNIST / "small"
    before = torch.get_num_threads()
    plan = paper.get_experiment(MNIST).plan("small")
    chosen = [s.name for s in runner.select_steps(plan, ["onecycle-*"])]
    assert chosen == ["sweep-onecycle", "onecycle-12ep"]  # the sweep it takes max_lr from
    with pytest.raises(
        UserError, match=r"--only 'inv-12ep' matches no step.*Steps: sweep-onecycle"
    ):
        runner.select_steps(plan, ["inv-12ep"])
    trial = next(t.name for t in plan.steps[0].trials())  # a grid point of the sweep
    with pytest.raises(UserError) as caught:
        runner.select_steps(plan, [trial.replace("max_lr", "max_lr*")])
    assert str(caught.value).startswith(
        f"--only '{trial.replace('max_lr', 'max_lr*')}' names runs inside the sweep(s) "
        "sweep-onecycle; --only selects whole steps."
    ), caught.value
    with pytest.raises(UserError, match="threads must be an integer >= 1"):
        runner.reproduce(paper.get_experiment(MNIST), seeds=1, out=out, threads=0, dry_run=True)

    runner.reproduce(paper.get_experiment(MNIST), seeds=1, out=out, device="cpu", progress=False, threads=1, only=["caffe-*"])
    assert torch.get_num_threads() == before  # restored after the call
    assert sorted(p.name for p in root.iterdir() if (p / "seed0").is_dir()) == [
        "caffe-reference-85ep"
    ]
    config = json.loads((root / "caffe-reference-85ep/seed0/config.json").read_text())
    assert config["threads"] == 1

    # A second call with other rows: the manifest keeps both calls, both sets of runs, and
    # the finished row is not trained again (its config differs only in where it ran).
    runner.reproduce(paper.get_experiment(MNIST), seeds=1, out=out, device="cpu", progress=False, only=["onecycle-12ep"])
    manifest = json.loads((root / "manifest.json").read_text())
    calls = manifest["invocations"]
    assert len(calls) == 2 and all(c["finished"] for c in calls)
    assert "only=['caffe-*']" in calls[0]["call"] and "threads=1" in calls[0]["call"]
    assert "caffe-reference-85ep/seed0" in manifest["runs"]
    assert "onecycle-12ep/seed0" in manifest["runs"]
    # New runs are appended: the first call's runs keep their place, so a later call
    # does not reshuffle a committed manifest.
    assert manifest["runs"][0] == "caffe-reference-85ep/seed0"
    assert set(manifest["tuned"]) == {"sweep-onecycle"}
    assert not (root / "inv-12ep-tuned").exists()
    report = (root / "report.md").read_text()
    inv_row = next(line for line in report.splitlines() if line.startswith("| `inv-12ep-tuned`"))
    assert "not run yet" in inv_row
    capsys.readouterr()
    runner.reproduce(paper.get_experiment(MNIST), seeds=1, out=out, device="cpu", only=["caffe-*"], dry_run=True)
    assert "1 runs: 1 done" in capsys.readouterr().out


def test_calls_sharing_a_folder_skip_a_claimed_final_run_and_wait_for_a_claimed_trial(
    tmp_path, capsys, monkeypatch
):
    """Two `reproduce` processes on one folder (the README's lanes) never run one run twice."""
    import threading

    out = tmp_path / "results"
    root = out / MNIST / "small"
    trained: list[str] = []
    real_train = train_mod.train

    release = threading.Event()

    def train(config, run_dir, **kw):
        trained.append(str(Path(run_dir).relative_to(root)))
        if trained[-1] == "sweep-onecycle-max_lr0.3/seed0":  # past the claimed trial
            release.set()
        return real_train(config, run_dir, **kw)

    monkeypatch.setattr(train_mod, "train", train)
    held = root / "caffe-reference-85ep" / "seed0"
    with runner.run_claim(held) as mine:  # "another process" is running seed 0
        assert mine
        with runner.run_claim(held) as again:  # a second claim conflicts, even from this process
            assert not again
        runner.reproduce(
            paper.get_experiment(MNIST), seeds=2, out=out, device="cpu", progress=False, threads=1, only=["caffe-*"]
        )
    printed = capsys.readouterr().out
    assert trained == ["caffe-reference-85ep/seed1"]
    assert "caffe-reference-85ep/seed0: another process is running it, skipped here" in printed
    assert "1 run(s) were left to the other process running them" in printed
    assert runner._status(held) == "new" and runner._status(root / "caffe-reference-85ep/seed1") in DONE

    # A sweep trial claimed elsewhere is waited for: the pick needs it. Here the other
    # "process" lets go without ending it (as if killed), so this call runs it itself.
    trial = root / "sweep-onecycle-max_lr0.1" / "seed0"
    claimed = threading.Event()

    def other():
        with runner.run_claim(trial):
            claimed.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=other)
    thread.start()
    claimed.wait(timeout=60)
    trained.clear()
    runner.reproduce(
        paper.get_experiment(MNIST), seeds=1, out=out, device="cpu", progress=False, threads=1, only=["onecycle-12ep"]
    )
    thread.join()
    printed = capsys.readouterr().out
    assert "sweep-onecycle-max_lr0.1/seed0: another process is running it, skipped here" in printed
    assert "sweep-onecycle-max_lr0.1/seed0: waiting for the other process to end it" in printed
    assert trained.count("sweep-onecycle-max_lr0.1/seed0") == 1
    assert trained[-1] == "onecycle-12ep/seed0"  # after the whole sweep, the trial included
    assert trained.index("sweep-onecycle-max_lr0.1/seed0") == len(trained) - 2
    assert "picked max_lr" in printed and "left to the other process" not in printed
    # what the lanes leave on disk: lock files beside the runs, holding nothing
    assert (root / "caffe-reference-85ep" / ".seed0.lock").stat().st_size == 0
