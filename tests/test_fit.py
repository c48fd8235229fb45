"""superconv fit (issue 22): the pure halving core on stub scorers, the API on a user's own
module and loaders, and the command line end to end on mnist-demo, interrupted and resumed
in the check and in training."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import DATA
from torch.utils.data import DataLoader, TensorDataset

import superconv
from superconv.errors import DivergenceError, UserError
from superconv.fit import (
    FACTORS,
    Budget,
    Trial,
    candidate_lrs,
    edge_note,
    find_cycle,
    fit,
    halving_cost,
    plan_budget,
    ranking_agreement,
    run_scores,
    rung_lengths,
    successive_halving,
    verdict,
)
from superconv.suggest import CYCLE


# ----------------------------------------------------------------------------- pure core
def stub(scores, steps_when_diverged=3):
    """A scorer with known scores (None = diverges after a few steps) that logs its calls."""
    calls = []

    def scorer(lr, iterations, rung):
        calls.append((rung, lr, iterations))
        score = scores[lr]
        steps = iterations if score is not None else steps_when_diverged
        return Trial(lr, rung, iterations, score, steps)

    return scorer, calls


def test_successive_halving_keeps_the_better_half_and_charges_every_run():
    scorer, calls = stub({0.4: 90.0, 0.2: 95.0, 0.1: 93.0, 0.05: 80.0})
    h = successive_halving([0.4, 0.2, 0.1, 0.05], 10, scorer)
    assert h.rungs == ((0.4, 0.2, 0.1, 0.05), (0.2, 0.1))  # the better half goes on
    assert calls[4:] == [(1, 0.2, 20), (1, 0.1, 20)]  # fresh runs, twice as long
    assert h.chosen == 0.2
    assert h.cost == 4 * 10 + 2 * 20 == halving_cost(4, 10)
    assert not h.notes


def test_the_longer_rung_decides_against_the_first():
    # 0.4 wins the short rung but loses the long one: the long rung's ranking counts
    scores = {(0, 0.4): 95.0, (0, 0.2): 90.0, (0, 0.1): 80.0, (1, 0.4): 85.0, (1, 0.2): 92.0}
    h = successive_halving(
        [0.4, 0.2, 0.1], 10, lambda lr, n, r: Trial(lr, r, n, scores[(r, lr)], n)
    )
    assert h.rungs == ((0.4, 0.2, 0.1), (0.4, 0.2))
    assert h.chosen == 0.2 and h.cost == 3 * 10 + 2 * 20


def test_a_diverged_candidate_is_dropped_noted_and_charged_what_it_ran():
    scorer, _ = stub({0.4: None, 0.2: 95.0, 0.1: 93.0, 0.05: 80.0})
    h = successive_halving([0.4, 0.2, 0.1, 0.05], 10, scorer)
    assert h.rungs[1] == (0.2, 0.1)  # ceil(3 / 2) of the three left
    assert h.chosen == 0.2
    assert h.cost == 3 + 3 * 10 + 2 * 20
    assert len(h.notes) == 1 and "max_lr 0.4 diverged after 3 of 10" in h.notes[0]


def test_a_single_survivor_is_chosen_without_a_longer_rung():
    scorer, calls = stub({0.4: None, 0.2: None, 0.1: 93.0, 0.05: 80.0})
    h = successive_halving([0.4, 0.2, 0.1, 0.05], 10, scorer)
    assert h.chosen == 0.1 and len(h.rungs) == 1 and len(calls) == 4
    assert h.cost == 3 + 3 + 10 + 10


def test_a_candidate_at_chance_is_dropped_only_where_another_learned(tmp_path):
    chance = {0.4: (12.0, True), 0.2: (11.0, True), 0.1: (90.0, False), 0.05: (80.0, False)}

    def scorer(lr, n, r):
        score, at = chance[lr]
        return Trial(lr, r, n, score, n, at_chance=at)

    h = successive_halving(list(chance), 10, scorer)
    # two left of four: the better one is chosen without a longer rung (kept, the two at
    # chance would have sent 0.1 and 0.05 on to a second rung)
    assert h.rungs == ((0.4, 0.2, 0.1, 0.05),) and h.chosen == 0.1
    assert h.cost == 4 * 10 and [t.score for t in h.trials[:2]] == [None, None]
    assert sum("ended at chance" in n for n in h.notes) == 2
    # all at chance: nothing says the LR is to blame (a rung too short): ranked as they are
    both = successive_halving([0.4, 0.2], 10, lambda lr, n, r: scorer(lr, n, r))
    assert both.chosen == 0.4 and not both.notes
    # the config backend reads it from the finished run's last evaluation
    from superconv.fit import _ended_at_chance
    from superconv.records import RunDir

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_metrics([{"iteration": 49, "train_loss": 2.3, "train_acc": 10.5, "val_acc": 10.1}])
    assert _ended_at_chance(run.path, {"num_classes": 10})
    assert not _ended_at_chance(run.path, {"num_classes": 100})  # 10% is above 1% + 5
    assert not _ended_at_chance(run.path, {})  # an old summary without num_classes


def test_a_check_run_stopped_by_the_collapse_rule_is_charged_its_length(tmp_path):
    from superconv.errors import DivergenceError
    from superconv.fit import _ConfigBackend
    from superconv.train import TrainConfig

    backend = _ConfigBackend(TrainConfig(), tmp_path, progress=False, test_images=0)
    stops = {
        "the run collapsed: the smoothed training loss blew up": 210,  # the last row's iteration
        "the training loss became NaN/inf at iteration 99": 99,  # the 0-based step
    }
    for message, step in stops.items():
        backend._run = lambda *a, m=message, s=step, **k: (_ for _ in ()).throw(
            DivergenceError(m, step=s, lr=2.0)
        )
        t = backend.trial(2.0, 210, 0)
        assert t.score is None and t.steps_run == min(210, step + 1)
        assert t.note == ("loss NaN/inf" if "NaN" in message else "collapsed: finite but blown up or at chance")


def test_every_candidate_diverging_chooses_nothing():
    scorer, calls = stub(dict.fromkeys([0.4, 0.2], None))
    h = successive_halving([0.4, 0.2], 10, scorer)
    assert h.chosen is None and len(calls) == 2 and h.cost == 6 and len(h.notes) == 2


def test_rungs_and_candidates():
    assert rung_lengths(4, 10) == [10, 20]
    assert rung_lengths(5, 10) == [10, 20, 40]
    assert rung_lengths(1, 10) == [10]
    assert halving_cost(5, 10) == 5 * 10 + 3 * 20 + 2 * 40
    assert candidate_lrs(0.1) == pytest.approx((0.4, 0.2, 0.1, 0.05))  # FACTORS: x4 .. x1/2
    assert candidate_lrs(0.1, (2, 1, 0.5)) == pytest.approx((0.2, 0.1, 0.05))
    with pytest.raises(UserError, match="max_lr must be a finite number > 0"):
        candidate_lrs(float("nan"))


def test_budget_caps_the_range_test_at_a_tenth_and_fits_the_check_in_the_rest():
    from superconv.suggest import default_range_test

    # the default test's length (a share of the budget), within the cap of a tenth
    b = plan_budget(1000)
    assert b.range_steps == min(default_range_test(budget=1000)["num_steps"], 100)
    # the check gets the rest: 4 candidates x r + 2 x 2r <= what is left
    assert b.rung_first == (1000 - b.range_steps) // 8
    assert b.range_iterations + b.check_iterations <= 1000
    b = plan_budget(10_000, repeats=3, tune_budget=0.5)
    assert b.range_steps == min(default_range_test(budget=10_000)["num_steps"], 1000 // 3)
    assert b.range_iterations <= 1000 < b.range_iterations + b.check_iterations <= 5000
    assert plan_budget(1000, verify=False).rung_first == 0


def test_a_budget_too_small_for_a_range_test_names_the_minimum():
    with pytest.raises(
        UserError, match=r"too small for 1 range test\(s\).*at least 100 iterations"
    ):
        plan_budget(99)
    with pytest.raises(
        UserError, match=r"too small for 3 range test\(s\).*at least 300 iterations"
    ):
        plan_budget(299, repeats=3)
    with pytest.raises(UserError, match="range_steps must be an integer >= 10"):
        plan_budget(1000, range_steps=5)


def test_exceeding_the_cap_or_skipping_the_check_is_noticed():
    b = plan_budget(100, range_steps=40)
    assert b.range_steps == 40 and "exceeds the 10% cap" in b.notes[0]
    assert plan_budget(1000, repeats=3).range_steps == 33  # the repeats share the cap
    b = plan_budget(100, tune_budget=0.3)
    assert b.rung_first == 0 and "check skipped" in b.notes[0]
    with pytest.raises(UserError, match="tune_budget must be a number > 0"):
        plan_budget(100, tune_budget=0)


def test_verdicts():
    scorer, _ = stub({0.2: 1.0, 0.1: 2.0})
    h = successive_halving([0.2, 0.1], 10, scorer)
    assert verdict([0.1], h)["verdict"] == "checked by training"
    assert verdict([0.1], h)["chosen_factor"] == 1.0
    assert verdict([0.1, 0.19, 0.12])["verdict"] == "reliable"
    v = verdict([0.1, 0.25])
    assert v["verdict"] == "unreliable (spread over 2x)" and v["spread"] == pytest.approx(2.5)
    assert v["suggested_max_lr"] == pytest.approx(math.sqrt(0.1 * 0.25))  # log-scale median
    assert verdict([0.1])["verdict"] == "unchecked"


def test_ranking_agreement_of_short_and_full_runs():
    r = ranking_agreement({0.1: 90.0, 0.2: 95.0, 0.4: None}, {0.1: 96.0, 0.2: 94.0, 0.4: 97.0})
    assert r["lrs"] == [0.1, 0.2] and r["kendall_tau"] == -1.0
    assert not r["same_best"] and r["short_pick"] == 0.2 and r["regret"] == pytest.approx(2.0)
    with pytest.raises(UserError, match="needs 2 LRs"):
        ranking_agreement({0.1: 1.0}, {0.1: 1.0})


# ----------------------------------------------------------------------------- the phases
class FakeBackend:
    """Known curve, known candidate scores (best at 0.2), a final run that diverges at first."""

    def __init__(self, diverging_finals=1):
        self.diverging_finals, self.calls = diverging_finals, []

    def range_test(self, seed, steps, rplan):
        from superconv.range_test import RangeTestCurve

        self.calls.append("range_test")
        lrs = [0.01 * 1.1**i for i in range(60)]
        losses = [2.0 - 0.02 * i if i < 40 else 1.2 + 0.3 * (i - 40) for i in range(60)]
        curve = RangeTestCurve(lrs=lrs, losses=losses, smoothed_losses=losses, num_steps=60)
        return curve, (60, 0)

    def trial(self, lr, iterations, rung):
        self.calls.append(("trial", rung, lr))
        return Trial(lr, rung, iterations, -abs(math.log(lr / 0.2)), iterations)

    def final(self, lr, iterations, attempt):
        self.calls.append(("final", attempt, lr))
        if attempt < self.diverging_finals:
            raise DivergenceError("stub", step=5, lr=lr)
        return {"status": "finished", "final_test_acc": 90.0, "run": "train"}


def test_phases_halve_a_diverging_final_run_and_a_resume_keeps_its_lr():
    import copy

    from superconv.fit import RangePlan, _phases, _Record

    budget = plan_budget(600, range_steps=60)
    record = _Record(None, {"settings": {}, "phases": {}, "notes": []})
    backend = FakeBackend()
    result = _phases(backend, budget, RangePlan(), record, quiet, 0, (2.0, 1.0, 0.5, 0.25))
    chosen = record.data["phases"]["check"]["chosen"]
    assert [c for c in backend.calls if c[0] == "final"] == [
        ("final", 0, chosen),
        ("final", 1, chosen / 2),
    ]
    assert result.max_lr == record.data["max_lr"] == chosen / 2
    assert "trained at" in record.data["verdict"]["trained"]
    assert any("rerun at max_lr" in n for n in record.data["notes"])
    # resumed after the end: every phase is read back, nothing is trained, the LR is kept
    again = FakeBackend()
    resumed = _Record(None, copy.deepcopy(record.data))
    result = _phases(again, budget, RangePlan(), resumed, quiet, 0, (2.0, 1.0, 0.5, 0.25))
    assert again.calls == [] and result.max_lr == chosen / 2
    assert "trained" in resumed.data["verdict"]


# ----------------------------------------------------------------------------- the API
@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on shared cores: more threads only contend (conftest restores the count).
    torch.set_num_threads(1)


def blobs(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, 0] + 0.5 * x[:, 1] > 0).long())


def loader(dataset, shuffle=True):
    return DataLoader(dataset, batch_size=32, shuffle=shuffle)


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def quiet(line):
    pass


def test_api_with_own_module_val_and_test_loaders(tmp_path):
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(
        model,
        loader(blobs()),
        loader(blobs(256, 1), False),
        loader(blobs(256, 2), False),
        iterations=100,
        out=tmp_path / "fit",
        echo=quiet,
    )
    assert result.verdict == "checked by training"
    assert result.record["split"] == "val_data given by the caller"
    assert result.policy_params == CYCLE.policy_params(result.max_lr)
    assert result.summary["final_test_acc"] > 80 and result.summary["final_val_acc"] > 80
    # the user's model itself is the one trained
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    record = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert set(record["phases"]) == {"range_test", "check", "train"}
    for name in ("fit.md", "range_test.png", "candidates.png", "schedule.png", "training.png"):
        assert (tmp_path / "fit" / name).is_file(), name
    with pytest.raises(UserError, match="already holds a fit. Choose another output folder"):
        fit(mlp(), loader(blobs()), iterations=100, out=tmp_path / "fit", echo=quiet)


def test_api_without_val_data_holds_out_a_stated_split():
    result = fit(mlp(), loader(blobs()), epochs=7, verify=False, echo=quiet)
    assert result.record["split"].startswith("51 of the 512 samples of train_data (10%")
    assert result.budget.iterations == 7 * math.ceil(461 / 32)
    assert result.verdict == "unchecked" and "check" not in result.record["phases"]
    assert result.summary["final_test_acc"] is None  # no test data: no test evaluation


def test_api_takes_a_loss_fn_and_repeats_give_a_spread():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    data = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    torch.manual_seed(0)
    result = fit(
        torch.nn.Linear(4, 1),
        data,
        iterations=200,
        loss_fn=torch.nn.functional.mse_loss,
        repeats=2,
        tune_budget=0.2,  # two range tests (10 iterations each), no room for a check
        echo=quiet,
    )
    v = result.record["verdict"]
    assert v["seeds"] == 2 and v["verdict"] in ("reliable", "unreliable (spread over 2x)")
    assert result.summary["final_val_loss"] < 0.5 * float(y.var())


def test_find_cycle_leaves_the_model_as_it_was():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_cycle(model, loader(blobs()), budget=100, echo=quiet)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.policy_params["div"] == CYCLE.div and result.summary == {}
    assert result.verdict == "checked by training"


def test_api_bad_input():
    with pytest.raises(UserError, match="epochs= or iterations="):
        fit(mlp(), loader(blobs()), echo=quiet)
    with pytest.raises(UserError, match="too small for 1 range test"):
        fit(mlp(), loader(blobs()), iterations=50, echo=quiet)


def test_fit_and_find_cycle_are_exported_lazily():
    import subprocess
    import sys

    code = (
        "import sys, superconv; assert 'torch' not in sys.modules; "
        "assert callable(superconv.fit) and callable(superconv.find_cycle)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert superconv.find_cycle is find_cycle and callable(superconv.fit)
    result = superconv.fit(mlp(), loader(blobs()), iterations=100, verify=False, echo=quiet)
    assert isinstance(result.budget, Budget)


# ----------------------------------------------------------------------------- the CLI
ARGS = ["fit", *DATA, "--iterations", "100"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A fit interrupted in the check, resumed, interrupted in training, resumed to the end."""
    import superconv.train
    from superconv.cli import main
    from superconv.records import RunDir

    out = tmp_path_factory.mktemp("fit") / "lenet"
    mp = pytest.MonkeyPatch()
    calls: list[str] = []
    real_train, real_write = superconv.train.train, RunDir.write_metrics
    pending = {"check": True, "train": True}

    def counting_train(config, run_dir, **kw):
        calls.append(Path(run_dir).name)
        return real_train(config, run_dir, **kw)

    def interrupting_write(self, rows):
        name = self.path.name
        if pending["check"] and name.startswith("rung1"):
            pending["check"] = False
            raise KeyboardInterrupt("test: interrupted in the check")
        if pending["train"] and name.startswith("train") and len(rows) == 5:
            pending["train"] = False  # after the checkpoint of row 4 (iteration 40)
            raise KeyboardInterrupt("test: interrupted in training")
        return real_write(self, rows)

    mp.setattr(superconv.train, "train", counting_train)
    mp.setattr(RunDir, "write_metrics", interrupting_write)
    records, codes, errors = [], [], []
    stderr = io.StringIO()
    try:
        for argv in (
            [*ARGS, "--out", str(out)],
            ["fit", "--resume", str(out), "--no-progress"],
            ["fit", "--resume", str(out), "--no-progress"],
        ):
            with contextlib.redirect_stderr(stderr):
                codes.append(main(argv))
            errors.append(stderr.getvalue())
            stderr.seek(0)
            stderr.truncate()
            records.append(json.loads((out / "fit.json").read_text()))
    finally:
        mp.undo()
    return SimpleNamespace(out=out, codes=codes, records=records, calls=calls, errors=errors)


def test_cli_fit_resumes_in_the_check_and_in_training(fitted):
    assert fitted.codes == [130, 130, 0]
    assert "interrupted in its check phase" in fitted.errors[0]
    assert "interrupted in its training phase" in fitted.errors[1]
    assert f"superconv fit --resume {fitted.out}" in fitted.errors[1]
    first, second, final = fitted.records
    assert set(first["phases"]) == {"range_test", "check"}
    assert [t["rung"] for t in first["phases"]["check"]["trials"]] == [0, 0, 0, 0]
    assert set(second["phases"]) == {"range_test", "check"}
    assert second["phases"]["check"]["done"]
    assert set(final["phases"]) == {"range_test", "check", "train"}
    # finished candidates were not trained again; the interrupted one was restarted
    rung0 = [c for c in fitted.calls if c.startswith("rung0")]
    assert len(rung0) == 4 == len(set(rung0))
    first_rung1 = [c for c in fitted.calls if c.startswith("rung1")][0]
    assert fitted.calls.count(first_rung1) == 2
    # training resumed from its checkpoint: all ten evaluations, one per 10 iterations
    run = fitted.out / final["phases"]["train"]["run"]
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(10, 101, 10))
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_cli_fit_records_every_phase_and_the_verdict(fitted):
    record = fitted.records[-1]
    check = record["phases"]["check"]
    suggested = record["phases"]["range_test"]["suggestions"][0]["max_lr"]
    assert check["candidates"] == pytest.approx([suggested * f for f in (4, 2, 1, 0.5)])
    assert check["rung_lengths"] == [11, 22]
    assert check["cost_iterations"] <= 100 - 10  # range test + check within 1.0 x the run
    assert record["verdict"]["verdict"] == "checked by training"
    assert record["max_lr"] in check["candidates"] or "trained" in record["verdict"]
    assert record["policy_params"] == CYCLE.policy_params(record["max_lr"])
    train = record["phases"]["train"]
    assert train["final_test_acc"] > 50 and train["train_images_seen"] == 100 * 32
    assert record["split"].startswith("1000 images held out of the 10000 training images")
    for phase in ("range_test", "check"):
        assert record["phases"][phase]["train_images"] > 0
        assert record["phases"][phase]["eval_images"] > 0


def test_cli_fit_writes_the_report(fitted):
    text = (fitted.out / "fit.md").read_text()
    for heading in (
        "## Range test",
        "## Check: successive halving",
        "## The chosen cycle",
        "## Training",
        "## Time and images per phase",
    ):
        assert heading in text
    assert "**chosen**" in text and "| check |" in text and "final test accuracy" in text
    assert "x the training run's wall time" in text and fitted.records[-1]["tuning_wall_ratio"] > 0
    for name in ("range_test.png", "candidates.png", "schedule.png", "training.png"):
        assert (fitted.out / name).stat().st_size > 1000, name
    assert sorted(p.name for p in (fitted.out / "check").iterdir())[0].startswith("rung0-lr")


def test_run_scores_reads_check_folders(fitted):
    check = fitted.records[-1]["phases"]["check"]
    scores = run_scores(sorted((fitted.out / "check").glob("rung0-*")))
    assert sorted(scores) == sorted(check["candidates"])
    for t in check["trials"]:
        if t["rung"] == 0:
            assert scores[t["lr"]] == t["score"]


def test_cli_fit_refuses_to_overwrite_a_fit_and_resume_takes_no_flags(fitted, capsys):
    from superconv.cli import main

    assert main([*ARGS, "--out", str(fitted.out)]) == 2
    assert "already holds a fit" in capsys.readouterr().err
    assert main(["fit", "--resume", str(fitted.out), "--iterations", "200"]) == 2
    assert "drop --iterations" in capsys.readouterr().err


def test_cli_fit_bad_budgets_exit_2_with_the_minimum(tmp_path, capsys):
    from superconv.cli import main

    assert main(["fit", *DATA, "--iterations", "50", "--out", str(tmp_path / "a")]) == 2
    assert "at least 100 iterations" in capsys.readouterr().err
    # no budget is the data set's default (3 epochs of mnist-demo); both are refused
    both = ["--epochs", "1", "--iterations", "200"]
    assert main(["fit", *DATA, *both, "--out", str(tmp_path / "b")]) == 2
    assert "give --epochs or --iterations, not both" in capsys.readouterr().err
    assert not (tmp_path / "a" / "fit.json").exists()


def test_cli_fit_maps_its_flags_to_fit_run(tmp_path, monkeypatch, capsys):
    from superconv import fit as fit_module
    from superconv.cli import main

    seen = {}

    def fake_fit_run(config, out, **kwargs):
        seen.update(kwargs, config=config, out=out)
        return SimpleNamespace(
            record={"verdict": {"verdict": "unchecked"}, "notes": []},
            summary={"final_test_acc": 90.0, "final_val_acc": 91.0, "run": "train"},
            max_lr=0.1,
            policy_params={"div": 4},
            budget=SimpleNamespace(iterations=563),
            files={"markdown": out / "fit.md"},
        )

    monkeypatch.setattr(fit_module, "fit_run", fake_fit_run)
    argv = ["fit", *DATA, "--epochs", "2", "--repeats", "3", "--no-verify", "--tune-budget",
            "0.5", "--range-steps", "20", "--start-lr", "1e-3", "--end-lr", "1", "--eval-every",
            "7", "--checkpoint-every", "14", "--out", str(tmp_path / "f")]  # fmt: skip
    assert main(argv) == 0
    assert (seen["epochs"], seen["repeats"], seen["verify"]) == (2.0, 3, False)
    assert (seen["tune_budget"], seen["range_steps"]) == (0.5, 20)
    assert (seen["range_plan"].start_lr, seen["range_plan"].end_lr) == (1e-3, 1.0)
    assert seen["evaluations"] is None and seen["config"].eval_every == 7
    assert seen["config"].val_size == 1000 and seen["config"].model == "lenet"
    out = capsys.readouterr().out
    assert "Verdict: unchecked" in out and "Final test accuracy 90.00%" in out
    assert "factors" not in seen  # fit_run's default candidates
    assert main([*argv[:-1], str(tmp_path / "g"), "--factors", "2,16,8,4"]) == 0
    assert seen["factors"] == (16.0, 8.0, 4.0, 2.0)  # largest first, as FACTORS
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "h"), "--factors", "4,-1"]) == 2
    assert "--factors: expected positive numbers" in capsys.readouterr().err


def test_a_check_won_by_its_largest_or_smallest_candidate_says_where_to_look():
    lrs = [0.4, 0.2, 0.1, 0.05]
    assert edge_note(lrs, 0.2, FACTORS) is None and edge_note(lrs, 0.1, FACTORS) is None
    assert edge_note(lrs, None, FACTORS) is None and edge_note([0.1], 0.1, (1,)) is None
    up = edge_note(lrs, 0.4, FACTORS)
    assert "largest candidate (max_lr 0.4)" in up and "may lie above" in up
    assert "--factors 16,8,4,2" in up and "factors=(16,8,4,2,)" in up
    down = edge_note(lrs, 0.05, FACTORS)
    assert "smallest candidate" in down and "--factors 1,0.5,0.25,0.125" in down
    assert "short runs favour low peaks" in down and "short runs" not in up


def test_fit_run_refuses_torchrun_and_no_validation_split(tmp_path, monkeypatch):
    from superconv.fit import fit_run
    from superconv.train import TrainConfig

    for key, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match="fit runs in one process"):
        fit_run(TrainConfig(val_size=100), tmp_path / "a")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(UserError, match="needs a validation split"):
        fit_run(TrainConfig(val_size=0), tmp_path / "b")
    assert not any(tmp_path.iterdir())


def test_cli_fit_exits_3_when_every_candidate_diverges_with_the_curve_saved(
    tmp_path, capsys, monkeypatch
):
    from superconv import fit as fit_module
    from superconv.cli import main

    def diverging(self, lr, iterations, rung):
        return Trial(lr, rung, iterations, None, 2, "stub: loss NaN")

    monkeypatch.setattr(fit_module._ConfigBackend, "trial", diverging)
    out = tmp_path / "fit"
    assert main(["fit", *DATA, "--epochs", "0.4", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "every candidate of the check diverged" in err and "fit.json" in err
    record = json.loads((out / "fit.json").read_text())
    assert record["settings"]["budget"]["iterations"] == math.ceil(0.4 * 9000 / 32)
    assert len(record["phases"]["range_test"]["curves"][0]["losses"]) > 0
    assert record["phases"]["check"]["chosen"] is None
    assert len(record["phases"]["check"]["notes"]) == 4
    assert "train" not in record["phases"]


def test_api_every_candidate_diverging_raises(monkeypatch):
    from superconv import fit as fit_module

    monkeypatch.setattr(
        fit_module._ModuleBackend, "trial", lambda self, lr, n, r: Trial(lr, r, n, None, 1)
    )
    with pytest.raises(DivergenceError, match="every candidate of the check diverged"):
        fit(mlp(), loader(blobs()), iterations=100, echo=quiet)
