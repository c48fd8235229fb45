"""The fair comparison rerun with the product (issue 22, item 6): the plan's new rows, the
runner's Fit step end to end at a tiny scale, and the report's cost-with-tuning table and
time-to-accuracy plot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from superconv import paper, runner
from superconv import report as rp
from superconv import suggest as suggest_module
from superconv.plan import Experiment, Fit, Plan, RangeTest, Sweep, Train, Tuned
from superconv.runs import DONE
from superconv.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
FAIR = ROOT / "results" / "fair-comparison" / "reduced"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _names(plan: Plan) -> list[str]:
    return [s.name for s in plan.steps]


# ----------------------------------------------------------------------------- the plan
def test_the_new_rows_are_appended_at_5ep_15ep_and_10k_only(monkeypatch):
    monkeypatch.setattr(suggest_module, "DEFAULT_TEST", None)  # no rule rows: tested below
    plan = paper.get_experiment("fair-comparison").plan("reduced")
    names = _names(plan)
    new = names[names.index("fit-5ep") :]
    assert new == [
        f"{kind}-{label}"
        for label in ("5ep", "15ep", "5ep-10k")
        for kind in ("fit", "schedulefree", "prodigy")
    ]
    # every committed step comes first, in its order; nothing new at 20k
    assert not any(n.endswith("-20k") for n in new)
    assert names.index("warmup_cosine-5ep-20k") < names.index("fit-5ep")
    steps = {s.name: s for s in plan.steps}
    assert isinstance(steps["fit-5ep"], Fit)
    # fit-15ep tied tuned warm-up + cosine on 2 seeds, schedule-free and Prodigy tied the
    # old range-test row: the third seed (the default rule's row: 2, below)
    for name in ("fit", "schedulefree", "prodigy"):
        assert [steps[f"{name}-{b}"].seeds for b in ("5ep", "15ep", "5ep-10k")] == [None, 3, None]
    assert steps["fit-5ep-10k"].config.train_subset == 10_000
    # same model, data, batch, augmentation and evaluation as the committed rows
    same = ("model", "dataset", "batch_size", "crop_pad", "flip", "val_size", "eval_every",
            "eval_batch_size", "weight_decay", "momentum", "iterations", "train_subset")  # fmt: skip
    for label, old in (("5ep", "multistep-5ep"), ("15ep", "multistep-15ep"),
                       ("5ep-10k", "multistep-5ep-10k")):  # fmt: skip
        for kind in ("fit", "schedulefree", "prodigy"):
            a, b = steps[f"{kind}-{label}"].config, steps[old].config
            assert {k: getattr(a, k) for k in same} == {k: getattr(b, k) for k in same}
    sf, pr = steps["schedulefree-5ep"].config, steps["prodigy-5ep"].config
    assert (sf.optimizer, sf.policy, dict(sf.policy_params)) == (
        "schedulefree_sgd", "constant", {"lr": 1.0})  # fmt: skip
    assert (pr.optimizer, pr.policy, dict(pr.policy_params)) == (
        "prodigy",
        "cosine",
        {"max_lr": 1.0},
    )


def test_committed_runs_keep_their_identity():
    """The runner's own check (a finished run whose config differs is refused) passes for
    every committed run of the plan, with the tuned values the manifest records."""
    plan = paper.get_experiment("fair-comparison").plan("reduced")
    manifest = json.loads((FAIR / "manifest.json").read_text())
    done = 0
    for job in runner._jobs(plan, 3, FAIR):
        if runner._status(job.path, job.step) in DONE:
            values = manifest["tuned"] if isinstance(job.step, Train) else {}
            runner._check_same(job, values, {"device": "auto", "data_dir": None, "threads": 1})
            done += 1
    # 16 rows x 3 seeds, 17 sweep trials, 1 range test; more as the product rows land
    assert done >= 66


def test_default_rule_rows_appear_once_a_default_test_is_chosen(monkeypatch):
    monkeypatch.setattr(suggest_module, "DEFAULT_TEST", None)
    plan = paper.get_experiment("fair-comparison").plan("reduced")
    assert not any(n.startswith("onecycle_plateau") for n in _names(plan))
    monkeypatch.setattr(suggest_module, "DEFAULT", {"rule": "loss_edge", "fraction": 0.5})
    monkeypatch.setattr(
        suggest_module, "DEFAULT_TEST", {"mode": "exp", "fraction": 0.1, "min_steps": 100}
    )
    chosen = paper.get_experiment("fair-comparison").plan("reduced")
    # the old steps are the same objects' equals, in the same order, first
    assert chosen.steps[: len(plan.steps) - 9] == plan.steps[: len(plan.steps) - 9]
    steps = {s.name: s for s in chosen.steps}
    for label, iterations, subset in (("5ep", 1758, None), ("15ep", 5274, None),
                                      ("5ep-10k", 1758, 10_000)):  # fmt: skip
        named = "loss_edge-f0.5"  # the rule with its constants (plan.rule_label)
        row, test = steps[f"onecycle_{named}-{label}"], steps[f"range-test-{named}-{label}"]
        assert _names(chosen).index(test.name) < _names(chosen).index(row.name)
        assert isinstance(test, RangeTest) and test.seeds == 1
        assert test.rule == ("loss_edge", (("fraction", 0.5),)) and test.budget == iterations
        assert test.config.iterations == max(100, -(-iterations // 10))  # 10% of the budget
        assert test.config.train_subset == subset  # the 10k rows test on the 10k subset
        assert (test.mode, test.start_lr, test.end_lr) == ("exp", 1e-4, 10.0)
        assert row.tuned == (Tuned("max_lr", test.name, "max_lr"),)
        assert row.config.iterations == iterations and row.config.train_subset == subset
        assert row.seeds == (2 if label == "15ep" else None)
    assert "onecycle_loss_edge-f0.5-5ep-20k" not in steps


def test_fit_status_reads_fit_json(tmp_path):
    def status(data):
        (tmp_path / "fit.json").write_text(json.dumps(data))
        return runner.fit_status(tmp_path)

    assert runner.fit_status(tmp_path) == "new"
    assert status({"phases": {"range_test": {}}}) == "resume"
    assert status({"phases": {"range_test": {}, "check": {"done": True, "chosen": None}}}) == (
        "diverged"
    )
    assert status({"phases": {}, "notes": ["the 1cycle ... diverged; no halvings left"]}) == (
        "diverged"
    )
    assert status({"phases": {"range_test": {}, "train": {"status": "finished"}}}) == "finished"


# ----------------------------------------------------------------------------- end to end
TINY = "tiny-fair"


def _tiny_plan(scale) -> Plan:
    """A swept baseline and a fit row at one budget, on the bundled MNIST subset."""
    base = TrainConfig(
        model="lenet", dataset="mnist-demo", normalize="unit", flip=False, batch_size=32,
        iterations=200, eval_every=50, checkpoint_every=50, eval_batch_size=1000, threads=1,
        val_size=1000, device="cpu",
    )  # fmt: skip
    return Plan(
        scale,
        (
            Sweep(
                "sweep",
                base.replace(policy="multistep", policy_params={"lr": 0.01}),
                "lr",
                (0.01, 0.05),
            ),  # fmt: skip
            Train(
                "multistep",
                base.replace(policy="multistep", policy_params={}),
                tuned=(Tuned("lr", "sweep"),),
            ),
            Fit("fit", base.replace(policy="one_cycle", policy_params={"div": 4}), seeds=1),
            Train(
                "prodigy",
                base.replace(optimizer="prodigy", policy="cosine", policy_params={"max_lr": 1.0}),
            ),  # fmt: skip
        ),
        ("a tiny plan of the fair comparison's kinds of rows",),
    )


@pytest.fixture
def tiny_experiment(monkeypatch):
    entries = paper._entries
    tiny = Experiment(TINY, "Tiny fair comparison", "tests", "fit pays its tuning", _tiny_plan)
    monkeypatch.setattr(paper, "_entries", lambda: (*entries(), tiny))
    return TINY


def test_a_fit_row_runs_end_to_end_and_reports_its_tuning_cost(tmp_path, tiny_experiment, capsys):
    out = tmp_path / "results"
    runner.reproduce(paper.get_experiment(TINY), seeds=1, scale="small", out=out, device="cpu", progress=False,
                 only=["fit", "multistep"])  # fmt: skip
    root = out / TINY / "small"
    fit = json.loads((root / "fit/seed0/fit.json").read_text())
    assert "train" in fit["phases"] and runner.fit_status(root / "fit/seed0") == "finished"
    assert fit["settings"]["train_config"]["eval_every"] == 50  # the row's own cadence
    rt, check = fit["phases"]["range_test"], fit["phases"]["check"]
    tuning = rt["iterations"] + check["cost_iterations"]
    assert tuning > 0

    text = (root / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `fit` | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "200" and cells[4] == f"{tuning:,}"
    assert cells[5] == f"{200 + tuning:,} ({(200 + tuning) / 200:.1f}×)"
    images = 200 * 32 + rt["train_images"] + check["train_images"]
    assert cells[6] == f"{images:,}"
    assert cells[10] == "its range test + check"
    # the swept baseline pays its sweep: 2 trials of 200 iterations
    row = next(line for line in text.splitlines() if line.startswith("| `multistep` | 1 |"))
    assert "| 200 | 400 | 600 (3.0×) |" in row and "`sweep` (2 run(s))" in row
    # rows not run yet are shown as such, never filled in
    assert re.search(r"\| `prodigy` \| 0 \| not run yet \|", text)
    # the fit row sits in the results table with its final accuracy
    acc = fit["phases"]["train"]["final_test_acc"]
    assert f"| `fit` | small | lenet | 200 | 1 | {acc:.2f} |" in text
    plot = root / "plots" / "time-to-accuracy-200.png"
    assert plot.is_file() and "](plots/time-to-accuracy-200.png)" in text
    # fit against its targets: one seed each side cannot be judged, and says so
    assert "## `superconv fit` against its targets" in text
    section = text.split("## `superconv fit` against its targets", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in section.splitlines() if line.startswith("| 200 it | `fit` |")]
    assert "| `multistep` |" in row and "| not a loss | n/a (needs 2+ seeds each) |" in row

    # run again: the finished fit is skipped (its identity checked), nothing is retrained
    capsys.readouterr()
    runner.reproduce(paper.get_experiment(TINY), seeds=1, scale="small", out=out, device="cpu", progress=False,
                 only=["fit"])  # fmt: skip
    assert "fit/seed0: finished earlier, skipped" in capsys.readouterr().out


def test_a_started_fit_is_resumed_in_its_phase(tmp_path, tiny_experiment, monkeypatch, capsys):
    from superconv import fit as fit_module

    out = tmp_path / "results"
    real = fit_module._train_phase

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("stopped in training")

    monkeypatch.setattr(fit_module, "_train_phase", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.reproduce(paper.get_experiment(TINY), seeds=1, scale="small", out=out, device="cpu", progress=False,
                     only=["fit"])  # fmt: skip
    seed = out / TINY / "small" / "fit" / "seed0"
    assert runner.fit_status(seed) == "resume"
    before = json.loads((seed / "fit.json").read_text())["phases"]
    monkeypatch.setattr(fit_module, "_train_phase", real)
    capsys.readouterr()
    runner.reproduce(paper.get_experiment(TINY), seeds=1, scale="small", out=out, device="cpu", progress=False,
                 only=["fit"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "resuming fit" in printed and "LR range test: done (read from fit.json)" in printed
    after = json.loads((seed / "fit.json").read_text())["phases"]
    assert after["range_test"] == before["range_test"] and after["check"] == before["check"]
    assert runner.fit_status(seed) == "finished"


# ----------------------------------------------------------------------------- the plot
def _run_folder(path: Path, row: str, iterations: int, accs: list[float], **config) -> None:
    """A finished run folder with metrics rows every iterations / len(accs)."""
    path.mkdir(parents=True)
    every = iterations // len(accs)
    config = {"model": "lenet", "dataset": "mnist-demo", "iterations": iterations,
              "batch_size": 32, "policy": "constant", "policy_params": {"lr": 0.1}, **config}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps(
        {"status": "finished", "iterations": iterations, "final_test_acc": accs[-1],
         "final_val_acc": accs[-1], "wall_time": 10.0}))  # fmt: skip
    lines = ["iteration,test_acc,val_acc"] + [
        f"{every * (k + 1)},{a},{a}" for k, a in enumerate(accs)
    ]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_the_time_to_accuracy_plot_shifts_each_row_by_its_tuning(tmp_path, monkeypatch):
    """Fixture run folders of a swept row, a range-test row and an untuned row: the plot's
    curves start after 2 x 100 (the sweep), 30 (the test) and 0 iterations."""
    base = TrainConfig(model="lenet", dataset="mnist-demo", batch_size=32, iterations=100,
                       eval_every=50, val_size=1000)  # fmt: skip
    plan = Plan("small", (
        Sweep("sweep", base.replace(policy="constant", policy_params={"lr": 0.1}), "lr",
                 (0.1, 0.2)),
        RangeTest("rt", base.replace(iterations=30), evaluate_on="val"),
        Train("swept", base.replace(policy="constant", policy_params={}),
                 tuned=(Tuned("lr", "sweep"),)),
        Train("tested", base.replace(policy="one_cycle", policy_params={}),
                 tuned=(Tuned("max_lr", "rt", "max_lr"),)),
        Train("untuned", base.replace(policy="constant", policy_params={"lr": 0.1})),
    ), ("fixture",))  # fmt: skip
    monkeypatch.setattr(rp, "_context", lambda root: rp._Context(root, {}, None, plan, "small", 1))
    root = tmp_path / "exp" / "small"
    for lr in (0.1, 0.2):
        _run_folder(root / f"sweep-lr{lr:g}" / "seed0", f"sweep-lr{lr:g}", 100, [50.0, 60.0])
    _run_folder(root / "rt" / "seed0", "rt", 30, [40.0])
    for row in ("swept", "tested", "untuned"):
        _run_folder(root / row / "seed0", row, 100, [70.0, 80.0])
    drawn = {}

    def spy(series, **kwargs):
        drawn[kwargs["path"].name] = (series, kwargs.get("x", "iteration"))
        return kwargs["path"]

    from superconv import plots

    monkeypatch.setattr(plots, "plot_curves", spy)
    rp.write_report(root)
    series, x = drawn["time-to-accuracy-100.png"]
    starts = {name: min(m[x] for m in rows) for name, rows in series.items()}
    assert starts == {"swept": 200 + 50, "tested": 30 + 50, "untuned": 50}
    text = (root / "report.md").read_text()
    assert "| `tested` | 1 | 80.00 | 100 | 30 | 130 (1.3×) |" in text
    assert "| `untuned` | 1 | 80.00 | 100 | 0 | 100 (1.0×) |" in text


def test_fits_targets_are_judged_on_the_numbers_that_decide_them():
    result = rp.fit_target_result
    # against the swept 1cycle: floor = swept mean - max(1, 2 SE of the difference)
    assert result([80, 80], [81, 81], 2.0, swept=True) == (
        "met: accuracy met (80.00 ≥ 80.00), cost met (2.00×)"
    )
    assert result([79.9, 79.9], [81, 81], 1.5, swept=True).startswith(
        "missed: accuracy missed (79.90 < 80.00)"
    )
    # a noisy fit widens the floor (SE = sqrt(8/2) = 2: floor 83 - 4), and the cost caps it
    assert result([78, 82], [83, 83], 2.1, swept=True) == (
        "missed: accuracy met (80.00 ≥ 79.00), cost missed (2.10×)"
    )
    # against another swept policy: not a loss by the band
    assert result([80, 80.2], [81, 81.2], 2.0, swept=False) == (
        "missed: loss (-1.00, band ±0.28)"
    )
    assert result([81, 81.2], [81, 81.2], 2.0, swept=False).startswith("met: tie")
    assert result([80], [81, 81], 2.0, swept=True) == "n/a (needs 2+ seeds each)"
    assert result([], [81, 81], None, swept=False) == "not run yet"
