"""The report from run directories: statistics against numpy, the paper beside ours, plots, regeneration.

The fixtures under ``tests/fixtures/report/`` are real tiny runs made by
``tools/make_report_fixture.py`` (mnist-lenet small with 2 seeds, fig2b and fig5a
small with 1 seed); the oracles here read their raw files directly.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from superconv.errors import UserError
from superconv.records import read_csv
from superconv.report import format_mean_std, mean_std, write_report

FIXTURES = Path(__file__).parent / "fixtures" / "report"
PNG = b"\x89PNG\r\n\x1a\n"


def copy(tmp_path: Path, exp_id: str) -> Path:
    """A writable copy of one fixture results folder, at ``<tmp>/<exp_id>/small``."""
    target = tmp_path / exp_id / "small"
    shutil.copytree(FIXTURES / exp_id / "small", target)
    return target


def table_row(report: str, row: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| `{row}` |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def section(report: str, title: str) -> str:
    """The text of one ``## `` section of the report."""
    start = report.index(title)
    end = report.find("\n## ", start + len(title))
    return report[start : end if end >= 0 else None]


def summaries(root: Path, row: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / row).glob("seed*/summary.json"))]


@pytest.fixture
def mnist(tmp_path):
    root = copy(tmp_path, "mnist-lenet")
    return root, write_report(root).read_text()


def test_mean_std_helpers_against_numpy():
    values = [91.2, 92.5, 90.7]
    mean, std, n = mean_std(values)
    assert (mean, std, n) == (
        pytest.approx(np.mean(values)),
        pytest.approx(np.std(values, ddof=1)),
        3,
    )
    assert format_mean_std(values) == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
    assert format_mean_std([91.25]) == "91.25"
    assert format_mean_std([]) == "—"
    assert mean_std([1.0, float("nan"), None]) == (1.0, pytest.approx(float("nan"), nan_ok=True), 1)


def test_rows_have_numpy_mean_std_the_paper_and_the_difference(mnist):
    root, report = mnist
    for row, paper in (
        ("onecycle-12ep", 99.3),
        ("inv-12ep-tuned", None),
        ("caffe-reference-85ep", 99.03),
    ):
        accs = [s["final_test_acc"] for s in summaries(root, row) if s["status"] == "finished"]
        assert len(accs) == 2, "the fixture has two finished seeds per row"
        mean, std = np.mean(accs), np.std(accs, ddof=1)
        cells = table_row(report, row)
        assert cells[1] == "small" and cells[2] == "lenet" and cells[4] == "2"
        assert cells[5] == f"{mean:.2f} ± {std:.2f}"
        assert cells[6] == ("—" if paper is None else f"{paper:.2f}")
        assert cells[7] == "—"  # no authors' log for MNIST
        assert cells[8] == ("—" if paper is None else f"{mean - paper:+.2f}")
    assert "follow-up practice notes" in report  # where the published numbers come from
    iterations = json.loads((root / "caffe-reference-85ep/seed0/config.json").read_text())[
        "iterations"
    ]
    assert table_row(report, "caffe-reference-85ep")[3] == f"{iterations:,}"


def test_tuned_rows_name_the_value_and_the_sweep_shows_validation_scores(mnist):
    root, report = mnist
    config = json.loads((root / "onecycle-12ep/seed0/config.json").read_text())
    assert f"max_lr = {config['policy_params']['max_lr']:.4g} from sweep-onecycle" in report
    scores = {}
    for trial in sorted(root.glob("sweep-onecycle-max_lr*/seed0")):
        summary = json.loads((trial / "summary.json").read_text())
        value = float(trial.parent.name.removeprefix("sweep-onecycle-max_lr"))
        if summary["status"] == "finished":
            scores[value] = summary["final_val_acc"]
            assert f"| {value:g} | 1 | {summary['final_val_acc']:.2f} |" in report
    best = max(scores, key=scores.get)
    assert best == config["policy_params"]["max_lr"]  # picked by validation accuracy
    assert f"**picked max_lr = {best:g}**" in report


def test_plots_exist_and_the_report_regenerates_from_run_dirs_alone(mnist):
    root, first = mnist
    plots = root / "plots"
    names = {"test_acc.png", "train_loss.png", "test_loss.png", "lr.png", "momentum.png"}
    names.add("budget-12.png")  # the equal-budget comparison of the two 12-"epoch" rows
    # accuracy against iterations including tuning (the plan has a sweep), one per budget
    names |= {"time-to-accuracy-12.png", "time-to-accuracy-85.png"}
    assert {p.name for p in plots.iterdir()} == names
    assert all((plots / n).read_bytes().startswith(PNG) for n in names)
    for name in names:
        assert f"](plots/{name})" in first
    (root / "report.md").unlink()
    shutil.rmtree(plots)
    assert write_report(root).read_text() == first
    assert {p.name for p in plots.iterdir()} == names


def test_range_tests_report_the_suggestion_and_plot_it(tmp_path):
    root = copy(tmp_path, "fig2b")
    report = write_report(root).read_text()
    for run in sorted(root.glob("range-*/seed0")):
        data = json.loads((run / "range_test.json").read_text())
        cells = table_row(report, run.parent.name)
        assert cells[2] == "test"  # Fig. 2b plots test accuracy
        assert cells[3] == f"{len(data['curve']['losses'])} / {data['curve']['num_steps']}"
        assert cells[5] == data["curve"]["stop_reason"]
        assert cells[6] == f"{data['suggestion']['max_lr']:.3f}"
        assert cells[7] == f"{data['suggestion']['min_lr_ratio']:.3f}"
        assert (root / "plots" / f"range_test-{run.parent.name}.png").read_bytes().startswith(PNG)
    assert "Evaluated on the TEST set" in report


def test_estimates_report_the_recorded_smoothed_values(tmp_path):
    root = copy(tmp_path, "fig5a")
    report = write_report(root).read_text()
    for row in ("constant-0.1", "clr-0.1-3"):
        estimates = read_csv(root / row / "seed0" / "estimates.csv")
        cells = table_row(section(report, "## Hessian-free LR estimate"), row)
        assert cells[1] == "1" and cells[2] == str(len(estimates))
        assert cells[4] == f"{estimates[-1]['smoothed']:.3f}"
        assert cells[5] == f"{max(e['smoothed'] for e in estimates):.3f}"
    assert (root / "plots" / "estimates.png").read_bytes().startswith(PNG)


def test_fewer_seeds_and_unfinished_runs_are_said(tmp_path):
    root = copy(tmp_path, "mnist-lenet")
    shutil.rmtree(root / "inv-12ep-tuned" / "seed1")
    (root / "caffe-reference-85ep" / "seed1" / "summary.json").unlink()  # as if killed
    report = write_report(root).read_text()
    inv = table_row(report, "inv-12ep-tuned")
    assert inv[4] == "1" and "**only 1 of 2 planned seeds** ran" in inv[-1]
    ref = table_row(report, "caffe-reference-85ep")
    assert ref[4] == "1" and "1 seed(s) unfinished (1)" in ref[-1]
    assert "**only 1 of 2 planned seeds** ran" in ref[-1]  # the killed seed has not run
    only = summaries(root, "caffe-reference-85ep")[0]["final_test_acc"]
    assert ref[5] == f"{only:.2f}"  # n = 1: the value, no std


def test_a_folder_outside_the_registry_gets_the_tables_without_paper_numbers(tmp_path):
    root = tmp_path / "my-runs"
    for row in ("onecycle-12ep", "caffe-reference-85ep"):
        shutil.copytree(FIXTURES / "mnist-lenet" / "small" / row, root / row)
    report = write_report(root, tmp_path / "elsewhere" / "summary.md").read_text()
    assert report.startswith("# Results in my-runs")
    cells = table_row(report, "onecycle-12ep")
    assert cells[6] == cells[7] == cells[8] == "—"
    assert (tmp_path / "elsewhere" / "plots" / "test_acc.png").exists()


def test_bad_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="is not a folder of results"):
        write_report(tmp_path / "missing")
    with pytest.raises(UserError, match="no run directories"):
        write_report(tmp_path)


def _results_tree(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    for exp_id in ("mnist-lenet", "fig2b", "fig5a"):
        shutil.copytree(FIXTURES / exp_id / "small", results / exp_id / "small")
    return results


def _index_row(text: str, exp_id: str, row: str) -> list[str]:
    line = next(
        line
        for line in text.splitlines()
        if line.startswith(f"| [{exp_id}](") and f"| `{row}` |" in line
    )
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _headline_rows(text: str) -> dict[str, list[str]]:
    """The README block's table rows by row name (its experiment cell is filled on the
    first row of each experiment only)."""
    out, lead = {}, ""
    for line in text.splitlines():
        if line.startswith("| ") and "`" in line:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            lead = cells[0] or lead
            out[cells[1].strip("`")] = [lead, *cells[1:]]
    return out


def test_index_and_readme_block_carry_every_experiments_numbers(tmp_path):
    from superconv.cli import main

    results = _results_tree(tmp_path)
    readme = tmp_path / "README.md"
    from superconv.report import README_END, README_START

    readme.write_text(f"# Title\n\nbefore\n\n{README_START}\nold text\n{README_END}\n\nafter\n")
    assert main(["report", str(results), "--readme", str(readme)]) == 0
    index = (results / "README.md").read_text()
    block = readme.read_text()
    assert block.startswith("# Title\n\nbefore\n\n") and block.endswith("\n\nafter\n")
    assert "old text" not in block
    accs = [s["final_test_acc"] for s in summaries(results / "mnist-lenet/small", "onecycle-12ep")]
    # the index: every experiment's numbers
    # a final-accuracy row: the mean of the run's own summaries, the paper's number beside
    cells = _index_row(index, "mnist-lenet", "onecycle-12ep")
    assert cells[0] == "[mnist-lenet](mnist-lenet/small/report.md)"
    assert cells[7] == format_mean_std(accs) and cells[8] == "99.30"
    # a range-test row: the suggestion recorded in range_test.json
    for run in sorted((results / "fig2b/small").glob("range-*/seed0")):
        data = json.loads((run / "range_test.json").read_text())
        cells = _index_row(index, "fig2b", run.parent.name)
        assert cells[2] == "small" and cells[9] == f"{data['suggestion']['max_lr']:.3f}"
    # an estimate row: the last smoothed value in estimates.csv
    est = read_csv(results / "fig5a/small/clr-0.1-3/seed0/estimates.csv")
    cells = _index_row(index.split("**Eq. 8 LR estimate**")[1], "fig5a", "clr-0.1-3")
    assert cells[2] == "small" and cells[7] == f"{est[-1]['smoothed']:.3f}"
    # the README block: the headline experiments only, a few columns, a link to the index
    rows = _headline_rows(block)
    assert rows["onecycle-12ep"][0] == "[mnist-lenet](results/mnist-lenet/small/report.md) (small)"
    assert rows["onecycle-12ep"][5:7] == [format_mean_std(accs), "99.30"]
    assert "onecycle-12ep" in rows
    assert set(rows) <= {"onecycle-12ep", "inv-12ep-tuned", "caffe-reference-85ep"}
    assert "fig2b" not in block and "fig5a" not in block
    assert "[results/README.md](results/README.md)" in block
    # each linked report exists
    assert (results / "mnist-lenet/small/report.md").exists()


def test_readme_without_the_markers_is_refused_untouched(tmp_path):
    from superconv.report import update_readme

    results = _results_tree(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# no block here\n")
    with pytest.raises(UserError, match="has no results block"):
        update_readme(readme, [results / "fig2b/small"])
    assert readme.read_text() == "# no block here\n"


def _stale_results(repo: Path) -> list[str]:
    """What is stale in ``repo``'s README block and results/README.md against the run
    folders under ``repo/results`` (empty: both show what the committed runs say)."""
    from superconv.cli import report_folders
    from superconv.report import README_END, README_START, headline_markdown, summary_markdown

    stale = []
    folders = report_folders(repo / "results")
    text = (repo / "README.md").read_text(encoding="utf-8")
    block = text.split(README_START, 1)[1].split(README_END, 1)[0]
    if block != "\n" + headline_markdown(folders, repo):
        stale.append("README.md's results block")
    index = (repo / "results" / "README.md").read_text(encoding="utf-8")
    if not index.endswith("\n" + summary_markdown(folders, repo / "results")):
        stale.append("results/README.md")
    return stale


def test_the_projects_readme_shows_what_the_committed_results_say(tmp_path):
    """README's headline table and results/README.md's full tables are generated from
    results/, never typed in: they must match."""
    repo = Path(__file__).resolve().parents[1]
    assert _stale_results(_tracked_results(repo, tmp_path)) == [], (
        "stale: run `superconv report results --readme README.md`"
    )


def _tracked_results(repo: Path, copy: Path) -> Path:
    """In a git checkout, a copy of README.md and the files git tracks under results/ (as
    they are in the working tree) in ``copy``, so that runs still in progress beside the
    committed ones (untracked folders) do not count; elsewhere (an unpacked sdist) ``repo``."""
    import subprocess

    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "README.md", "results"],
            cwd=repo, capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return repo
    names = [name for name in listed.decode().split("\0") if name]
    if "README.md" not in names:  # not this project's checkout
        return repo
    for name in names:
        if (repo / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, copy / name)
    return copy


def test_a_stale_readme_number_is_caught(tmp_path):
    """The check above fails when one committed number in the README's block, or in
    results/README.md, differs from the runs (a copy of the repository's files)."""
    from superconv.report import README_END, README_START

    repo = Path(__file__).resolve().parents[1]
    for exp_id in ("mnist-lenet", "fig5a"):  # a headline experiment and another one
        shutil.copytree(repo / "results" / exp_id, tmp_path / "results" / exp_id)
    from superconv.cli import report_folders
    from superconv.report import update_readme, write_index

    (tmp_path / "README.md").write_text(f"# t\n\n{README_START}\n{README_END}\n")
    folders = report_folders(tmp_path / "results")  # the two files `report --readme` writes
    write_index(tmp_path / "results", folders)
    update_readme(tmp_path / "README.md", folders)
    assert _stale_results(tmp_path) == []
    for name in ("README.md", "results/README.md"):
        path = tmp_path / name
        good = path.read_text(encoding="utf-8")
        row = next(line for line in good.splitlines() if "`onecycle-12ep`" in line)
        mean = re.search(r"\| (\d+\.\d\d) ± ", row).group(1)
        path.write_text(good.replace(row, row.replace(mean, f"{float(mean) + 0.01:.2f}")))
        assert _stale_results(tmp_path) == [
            "README.md's results block" if name == "README.md" else "results/README.md"
        ]
        path.write_text(good)


def test_verdict_bands_and_reach():
    from superconv.report import iterations_to_reach, verdict

    assert verdict([90.0, 90.2, 89.8], [90.1, 89.9, 90.3]).startswith("tie")
    # means 91.0 vs 90.0, std 0.2 each, n 3: band 2*sqrt(2*0.04/3) = 0.327
    assert verdict([91.2, 91.0, 90.8], [90.2, 90.0, 89.8]) == "win (+1.00, band ±0.33)"
    assert verdict([90.2, 90.0, 89.8], [91.2, 91.0, 90.8]).startswith("loss (-1.00")
    assert verdict([91.0], [90.0, 90.1]).startswith("n/a")
    curve = [(10, 50.0), (20, 70.0), (30, 69.0), (40, 80.0)]
    assert iterations_to_reach(curve, 70.0) == 20
    assert iterations_to_reach(curve, 75.0) == 40
    assert iterations_to_reach(curve, 81.0) is None


def test_equal_budget_section_compares_1cycle_with_each_baseline(mnist):
    root, report = mnist
    text = section(report, "## Equal budgets")
    line = next(line for line in text.splitlines() if "`inv-12ep-tuned`" in line)
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    one = summaries(root, "onecycle-12ep")
    inv = summaries(root, "inv-12ep-tuned")
    assert cells[1] == "`onecycle-12ep`"
    assert cells[3] == format_mean_std([s["final_test_acc"] for s in one])
    assert cells[4] == format_mean_std([s["final_test_acc"] for s in inv])
    # reach, recomputed from the raw metrics.csv files
    target = float(np.mean([s["final_test_acc"] for s in inv]))
    by_it: dict[int, list[float]] = {}
    for path in sorted((root / "onecycle-12ep").glob("seed*/metrics.csv")):
        for m in read_csv(path):
            if m["test_acc"] is not None:
                by_it.setdefault(int(m["iteration"]), []).append(m["test_acc"])
    reach = next((i for i, v in sorted(by_it.items()) if np.mean(v) >= target), None)
    assert cells[6] == (
        "not reached" if reach is None else f"{reach:,} ({reach / one[0]['iterations']:.0%})"
    )
    assert "caffe-reference-85ep" not in text  # another budget: not compared
    assert (root / "plots" / "budget-12.png").read_bytes().startswith(PNG)


def test_a_sweep_with_a_run_in_progress_is_provisional_and_its_cost_counts_ended_runs(tmp_path):
    root = copy(tmp_path, "mnist-lenet")
    trials = sorted(root.glob("sweep-onecycle-max_lr*/seed0"))
    going = trials[0]
    (going / "summary.json").unlink()  # as if still training
    ended = [json.loads((t / "summary.json").read_text()) for t in trials[1:]]
    sweep = section(write_report(root).read_text(), "### `sweep-onecycle`")
    sweep = sweep.split("\n### ")[0]  # this sweep only, not the next one
    assert "**best so far max_lr = " in sweep and "**picked" not in sweep
    assert f"provisional: 1 of {len(trials)} values have no finished run yet" in sweep
    iterations = sum(s["iterations"] for s in ended)
    assert (
        f"Tuning cost: {len(ended)} run(s), {iterations:,} iterations" in sweep
        and "(not counted: 1 run(s) in progress or killed)" in sweep
    )


def test_a_sweep_not_run_yet_says_so_instead_of_advising_a_wider_grid(tmp_path):
    root = copy(tmp_path, "mnist-lenet")
    for trial in root.glob("sweep-onecycle-max_lr*"):
        shutil.rmtree(trial)
    sweep = section(write_report(root).read_text(), "### `sweep-onecycle`").split("\n### ")[0]
    assert "no pick: not run yet: no value of the sweep has a finished run." in sweep
    assert "widen" not in sweep and ".." not in sweep


def _resize(root: Path, row: str, images: int, accs: list[float]) -> str:
    """A copy of ``row`` as if trained on ``images`` images, with these final accuracies."""
    new = f"{row}-{images // 1000}k"
    shutil.copytree(root / row, root / new)
    for seed_dir, acc in zip(sorted((root / new).glob("seed*")), accs, strict=True):
        config = json.loads((seed_dir / "config.json").read_text())
        (seed_dir / "config.json").write_text(json.dumps({**config, "train_subset": images}))
        summary = json.loads((seed_dir / "summary.json").read_text())
        summary.update(train_images=images, final_test_acc=acc)
        (seed_dir / "summary.json").write_text(json.dumps(summary))
    return new


def test_limited_data_section_puts_each_policy_by_training_set_size(tmp_path):
    root = copy(tmp_path, "mnist-lenet")
    _resize(root, "onecycle-12ep", 2000, [40.0, 44.0])
    _resize(root, "inv-12ep-tuned", 2000, [30.0, 31.0])
    # same policy, other settings: not a size of onecycle-12ep
    other = _resize(root, "onecycle-12ep", 3000, [50.0, 52.0])
    for config in (root / other).glob("seed*/config.json"):
        config.write_text(json.dumps({**json.loads(config.read_text()), "momentum": 0.5}))
    text = section(write_report(root).read_text(), "## Training-set size")
    full = summaries(root, "onecycle-12ep")[0]["train_images"]
    head = table_row(text.replace("| rows |", "| `rows` |"), "rows")
    assert head[3:] == ["2,000 images", f"{full:,} images"]  # 3,000: its only size, not a family
    one = table_row(text, "onecycle-12ep")
    assert one[1:3] == ["one_cycle", "12"]
    one_full = [s["final_test_acc"] for s in summaries(root, "onecycle-12ep")]
    inv_full = [s["final_test_acc"] for s in summaries(root, "inv-12ep-tuned")]
    assert one[3:] == ["42.00 ± 2.83", format_mean_std(one_full)]
    assert table_row(text, "inv-12ep-tuned")[3] == "30.50 ± 0.71"
    gap = table_row(text, "onecycle-12ep` − `inv-12ep-tuned")
    assert gap[3:] == ["+11.50", f"{np.mean(one_full) - np.mean(inv_full):+.2f}"]
    assert "caffe-reference" not in text and other not in text
    assert (root / "plots" / "data-size.png").read_bytes().startswith(PNG)


def test_no_limited_data_section_without_two_sizes(mnist):
    _, report = mnist
    assert "## Training-set size" not in report


# ---------------------------------------------------------------- report RUN [RUN...] (issue 23)
def test_report_of_run_folders_summary_comparison_and_curves(tmp_path, capsys):
    from helpers import DATA, tiny_train

    from superconv.cli import main

    a, b, lr = tmp_path / "a", tmp_path / "b", tmp_path / "lr"
    assert main(tiny_train(a)) == 0
    assert main(tiny_train(b, "--seed", "1")) == 0
    # train writes curves.png: loss and accuracy, the schedule beneath
    assert (a / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = ["lr-find", *DATA, "--steps", "30", "--mode", "exp", "--start-lr", "1e-4"]
    assert main([*args, "--end-lr", "0.1", "--out", str(lr)]) == 0
    capsys.readouterr()

    assert main(["report", str(a)]) == 0
    out = capsys.readouterr().out
    assert f"{a} (train)" in out and "status: finished" in out and "final test acc" in out

    assert main(["report", str(lr)]) == 0
    assert f"{lr} (lr-find)" in capsys.readouterr().out

    image = tmp_path / "cmp.png"
    assert main(["report", str(a), str(b), str(lr), "--out", str(image)]) == 0
    out = capsys.readouterr().out
    assert "| run | kind |" in out and f"| {a} | train |" in out and f"| {lr} | lr-find |" in out
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    from superconv.cli import main

    (tmp_path / "x").mkdir()
    assert main(["report", str(tmp_path / "x"), str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "x"), str(tmp_path / "x")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
