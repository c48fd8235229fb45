"""The command line: lr-find, train (flags, TOML, resume), error paths and their exit codes.

Everything runs through ``main([...])`` on the bundled ``mnist-demo`` with LeNet
and tens of iterations.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
from helpers import DATA, TINY, metrics_without_time, tiny_train

import superconv
from superconv import cli
from superconv.cli import main
from superconv.config import resolve_device
from superconv.records import read_csv
from superconv.step import auto_precision
from superconv.train import TrainConfig, train


# ----------------------------------------------------------------------------- basics
def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"superconv {superconv.__version__}"


def test_every_train_config_field_has_a_flag_and_a_description(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    for field in dataclasses.fields(TrainConfig):
        flag = (
            "--policy-param"
            if field.name == "policy_params"
            else "--" + field.name.replace("_", "-")
        )
        assert flag in text, flag
        assert field.name in cli.FIELD_HELP, f"FIELD_HELP lacks {field.name}"
    from superconv.schedules import POLICY_NAMES

    flat = " ".join(text.split())  # argparse wraps lines
    for name in POLICY_NAMES:  # the help lists what build_policy accepts, nothing else
        assert re.search(rf"[:,] {name}[,( ]", flat), name


def test_bad_flag_exits_2_with_usage_and_a_suggestion(capsys):
    assert main(["train", "--modle", "lenet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: superconv train")
    assert "unrecognized arguments: --modle lenet" in err and "did you mean '--model'" in err


def test_bad_value_type_exits_2(capsys):
    assert main(["train", "--batch-size", "many"]) == 2
    assert "argument --batch-size: 'many' is not an int" in capsys.readouterr().err


def test_unknown_command_suggests_one(capsys):
    assert main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_unknown_model_exits_2_with_did_you_mean(capsys, tmp_path):
    assert main(["train", *TINY, "--model", "resnt20", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("superconv: error: unknown model 'resnt20'")
    assert "did you mean 'resnet20'?" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_unknown_policy_exits_2_with_did_you_mean(capsys, tmp_path):
    assert main(["train", *TINY, "--policy", "one_cylce", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'one_cycle'?" in capsys.readouterr().err


def test_missing_data_names_the_expected_files(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["train", "--dataset", "cifar10", "--model", "resnet8", "--data-dir", str(empty)]
    assert main([*args, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cifar10 was not found in {empty}" in err
    assert "cifar-10-batches-bin/ with data_batch_1.bin" in err
    assert "superconv data fetch cifar10" in err


def test_unwritable_output_folder_exits_2(capsys, tmp_path):
    # A path under a regular file cannot be created, also for root.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(tiny_train(blocker / "run")) == 2
    err = capsys.readouterr().err
    assert f"cannot create the output folder {blocker / 'run'}" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_a_gpu_exits_2(capsys, tmp_path):
    assert main(tiny_train(tmp_path / "r", "--device", "cuda")) == 2
    assert "no usable CUDA GPU" in capsys.readouterr().err


def test_divergence_exits_3_naming_iteration_and_lr(capsys, tmp_path):
    args = ["train", *TINY, "--iterations", "30", "--policy", "constant"]
    assert main([*args, "--policy-param", "lr=1e6", "--out", str(tmp_path / "r")]) == 3
    err = capsys.readouterr().err
    found = re.search(
        r"superconv: error: training diverged: .* at iteration (\d+) \(lr (\S+)\)", err
    )
    assert found, err
    assert float(found.group(2)) == 1e6
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["iterations"] == int(found.group(1))


def test_keyboard_interrupt_exits_130_with_trains_message(capsys, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("interrupted at iteration 5; checkpoint saved in X")

    monkeypatch.setattr("superconv.train.train", interrupted)
    assert main(tiny_train(tmp_path / "r")) == 130
    assert "superconv: interrupted: interrupted at iteration 5" in capsys.readouterr().err


def test_unexpected_errors_exit_1_with_a_short_message(capsys, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("superconv.train.train", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert main(tiny_train(tmp_path / "a")) == 1
    err = capsys.readouterr().err
    assert "superconv: error: unexpected RuntimeError: boom" in err
    assert "Traceback" not in err
    assert main(tiny_train(tmp_path / "b", "--debug")) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert main(tiny_train(tmp_path / "c")) == 1
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- train
def test_train_from_flags_writes_the_run_and_prints_its_summary(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(tiny_train(out, "--val-size", "1000", "--estimator-k", "5")) == 0
    summary = json.loads((out / "summary.json").read_text())
    printed = capsys.readouterr().out
    assert f"test accuracy {summary['final_test_acc']:.2f}%" in printed
    assert f"validation accuracy {summary['final_val_acc']:.2f}%" in printed
    assert summary["status"] == "finished" and summary["iterations"] == 30
    assert [row["iteration"] for row in read_csv(out / "metrics.csv")] == [10, 20, 30]
    for name in ("schedule.png", "estimates.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # eq. 8 from snapshots every k = 5 iterations.
    iterations = [r["iteration"] for r in read_csv(out / "estimates.csv")]
    assert iterations and all(i % 5 == 0 for i in iterations)


def test_train_from_toml_with_flags_overriding_it(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'model = "lenet"\ndataset = "mnist-demo"\nnormalize = "unit"\nflip = false\n'
        "batch_size = 32\niterations = 20\neval_every = 10\ncheckpoint_every = 10\nseed = 5\n"
        'device = "cpu"\nthreads = 1\npolicy = "one_cycle"\n\n[policy_params]\nmax_lr = 0.02\npct_start = 0.25\n'
    )
    out = tmp_path / "run"
    args = ["train", "--config", str(toml), "--iterations", "30", "--policy-param", "max_lr=0.03"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["iterations"] == 30  # the flag
    assert config["seed"] == 5 and config["batch_size"] == 32  # the file
    assert config["policy_params"] == {"max_lr": 0.03, "pct_start": 0.25}  # merged
    assert len(read_csv(out / "metrics.csv")) == 3


def test_changing_the_policy_drops_the_files_policy_params(tmp_path):
    args = cli.build_parser().parse_args(
        ["train", "--policy", "multistep", "--policy-param", "lr=0.05",
         "--policy-param", "momentum=[0.95,0.85]", "--policy-param", "anneal=linear"]
    )  # fmt: skip
    config = cli.config_from_args(args, {"policy": "clr", "policy_params": {"min_lr": 1.0}})
    assert config.policy == "multistep"
    # JSON literals become numbers / lists; anything else stays a string.
    assert dict(config.policy_params) == {
        "lr": 0.05,
        "momentum": [0.95, 0.85],
        "anneal": "linear",
    }


@pytest.mark.parametrize(
    "content, message",
    [
        ("bach_size = 32\n", "unknown config key(s): 'bach_size'; did you mean 'batch_size'?"),
        ('batch_size = "big"\n', "config key 'batch_size' must be int, got str 'big'"),
        ("batch_size = \n", "is not valid TOML"),
    ],
)
def test_bad_toml_files_exit_2_naming_the_file(capsys, tmp_path, content, message):
    toml = tmp_path / "bad.toml"
    toml.write_text(content)
    assert main(["train", "--config", str(toml), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"superconv: error: {toml}")
    assert message in err


def test_missing_toml_file_exits_2(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "config file" in capsys.readouterr().err


class _Crash(Exception):
    pass


def test_resume_after_a_crash_matches_an_uninterrupted_run(capsys, tmp_path):
    reference = tmp_path / "reference"
    assert main(tiny_train(reference)) == 0
    # The same run, killed at iteration 17 (after the checkpoint at 10).
    parser_args = cli.build_parser().parse_args(tiny_train(tmp_path / "crashed"))
    config = cli.resolve_train_config(parser_args)  # as `train` resolves it

    def crash(step, model, optimizer, metrics):
        if step == 17:
            raise _Crash

    with pytest.raises(_Crash):
        train(config, tmp_path / "crashed", observers=[crash], progress=False)
    assert json.loads((tmp_path / "crashed" / "config.json").read_text()) == json.loads(
        (reference / "config.json").read_text()
    )
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "crashed"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"Resuming {tmp_path / 'crashed'}" in out and "test accuracy" in out
    assert metrics_without_time(tmp_path / "crashed" / "metrics.csv") == metrics_without_time(
        reference / "metrics.csv"
    )


def test_resume_refuses_config_flags(capsys, tmp_path):
    assert main(["train", "--resume", str(tmp_path), "--seed", "3", "--out", "x"]) == 2
    assert "drop --seed, --out" in capsys.readouterr().err


def test_resume_of_a_folder_without_a_run_exits_2(capsys, tmp_path):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert f"nothing to resume in {tmp_path}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- lr-find
def test_lr_find_writes_plot_and_json_and_prints_suggestions(capsys, tmp_path):
    out = tmp_path / "lr"
    args = ["lr-find", *DATA, "--steps", "40", "--mode", "exp", "--start-lr", "1e-4"]
    assert main([*args, "--end-lr", "0.1", "--eval-every", "5", "--out", str(out)]) == 0
    record = json.loads((out / "range_test.json").read_text())
    curve = record["curve"]
    assert (out / "range_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curve["stop_reason"] == "completed" and len(curve["lrs"]) == 40
    assert curve["lrs"][0] == pytest.approx(1e-4) and curve["lrs"][-1] == pytest.approx(0.1)
    assert curve["eval_steps"] == list(range(4, 40, 5))
    # Validation on 1,000 images held out of the training set (mnist-demo's default),
    # never the 2,000 test images: every accuracy is a multiple of 1/1000.
    assert record["val_images"] == 1000
    assert all(abs(a * 1000 - round(a * 1000)) < 1e-6 for a in curve["val_accs"])
    printed = capsys.readouterr().out
    suggestion = record["suggestion"]
    assert f"max_lr             {suggestion['max_lr']:.4g}" in printed
    assert suggestion["reasons"]["max_lr"] in printed
    assert "Next (the safe max_lr" in printed and "\n  superconv train --model lenet" in printed


def test_lr_find_by_a_named_rule_shows_its_cost_and_the_other_rules(capsys, tmp_path):
    out = tmp_path / "lr"
    args = ["lr-find", *DATA, "--steps", "40", "--mode", "exp", "--start-lr", "1e-4"]
    args += ["--end-lr", "1.0", "--eval-every", "5", "--rule", "valley", "--budget", "400"]
    assert main([*args, "--out", str(out)]) == 0
    record = json.loads((out / "range_test.json").read_text())
    printed = capsys.readouterr().out
    assert record["suggestion"]["rule"] == "valley" and "Suggestion by rule 'valley'" in printed
    ran = record["curve"]["steps_run"]
    assert f"{ran:,} steps in all: {ran / 400:.0%} of the 400-iteration budget" in printed
    from superconv.suggest import RULES

    assert set(record["rules"]) == set(RULES)  # every rule's pick is recorded
    assert "Other rules' max_lr (marked on the plot): steepest" in printed
    assert record["settings"]["rule"] == "valley" and record["settings"]["budget"] == 400


def test_lr_find_unknown_rule_or_bad_budget_exits_2_before_any_work(capsys, tmp_path):
    assert main(["lr-find", *DATA, "--rule", "vally", "--out", str(tmp_path / "a")]) == 2
    assert "unknown rule 'vally'; did you mean 'valley'?" in capsys.readouterr().err
    assert main(["lr-find", *DATA, "--budget", "0", "--out", str(tmp_path / "b")]) == 2
    assert "budget must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_lr_find_unwritable_out_exits_2(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = ["lr-find", *DATA, "--steps", "20", "--out", str(blocker / "lr")]
    assert main(args) == 2
    assert "cannot create the output folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- reproduce / report
def test_reproduce_list_shows_every_experiment(capsys):
    from superconv.paper import EXPERIMENTS

    assert main(["reproduce", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert listed == list(EXPERIMENTS)


def test_reproduce_unknown_experiment_exits_2_with_did_you_mean(capsys):
    assert main(["reproduce", "fig2"]) == 2
    assert "unknown experiment 'fig2'; did you mean" in capsys.readouterr().err


def test_reproduce_dry_run_trains_nothing(capsys, tmp_path):
    out = tmp_path / "results"
    args = ["reproduce", "mnist-lenet", "--dry-run", "--seeds", "1", "--device", "cpu"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert "mnist-lenet" in capsys.readouterr().out
    assert not list(out.glob("**/config.json"))


def test_report_finds_the_experiment_folders_under_results(capsys, tmp_path):
    config = TrainConfig.from_dict(
        {"model": "lenet", "dataset": "mnist-demo", "normalize": "unit", "flip": False,
         "batch_size": 32, "iterations": 10, "eval_every": 10, "checkpoint_every": 10,
         "policy": "one_cycle", "policy_params": {"max_lr": 0.02}, "device": "cpu", "threads": 1}
    )  # fmt: skip
    run = tmp_path / "results" / "my-exp" / "small" / "onecycle" / "seed0"
    train(config, run, progress=False)
    assert main(["report", str(tmp_path / "results")]) == 0
    report = tmp_path / "results" / "my-exp" / "small" / "report.md"
    index = tmp_path / "results" / "README.md"  # a folder of experiments: the index too
    assert capsys.readouterr().out.strip() == f"Wrote {report}\nWrote {index}"
    assert "onecycle" in report.read_text()
    assert "[my-exp](my-exp/small/report.md)" in index.read_text()


def test_report_of_a_missing_folder_exits_2(capsys, tmp_path):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no results folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- torchrun
def _lr_find_worker(rank: int, port: int, out: str) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    try:
        code = main([*LR_FIND_SMALL, "--out", out])
        if code != 0:
            raise SystemExit(f"rank {rank}: exit code {code}")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


LR_FIND_SMALL = [
    "lr-find", *DATA, "--steps", "20", "--mode", "exp", "--start-lr", "1e-3",
    "--end-lr", "0.1", "--eval-every", "5",
    "--precision", "fp32",  # the DDP check compares float32 sums; auto may pick bf16
]  # fmt: skip


@pytest.mark.slow  # two spawned processes import torch: ~20 s on 2 busy cores
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_lr_find_under_torchrun_matches_one_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_lr_find_worker, args=(port, str(tmp_path / "ddp")), nprocs=2, join=True)
    assert main([*LR_FIND_SMALL, "--out", str(tmp_path / "single")]) == 0
    ddp = json.loads((tmp_path / "ddp" / "range_test.json").read_text())["curve"]
    single = json.loads((tmp_path / "single" / "range_test.json").read_text())["curve"]
    # Two ranks share each global batch of 32 (LeNet has no BN): the same gradient
    # steps, and rank-averaged losses / accuracies over equal shards are the global ones.
    assert len(ddp["losses"]) == len(single["losses"]) == 20
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-4, abs=1e-5)
    assert ddp["val_accs"] == pytest.approx(single["val_accs"], abs=1e-6)


def test_building_the_parser_imports_neither_torch_nor_matplotlib():
    """`superconv --help` must be instant: the parser is built from torch-free data."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; from superconv.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_torch_free_config_names_match_the_library():
    import torch

    from superconv import config, schedules

    assert config.POLICY_NAMES == schedules.POLICY_NAMES
    assert config.FLOAT32_MAX == float(torch.finfo(torch.float32).max)


def test_every_help_line_names_its_default_once_and_val_size_as_resolved():
    import argparse

    from superconv.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("superconv", parser), *subs.choices.items()]:
        for action in sub._actions:
            text = action.help or ""
            assert text.count("(default:") <= 1, (name, action.option_strings, text)
    for name in ("lr-find", "fit"):
        val = next(a for a in subs.choices[name]._actions if "--val-size" in a.option_strings)
        assert "(default: 1,000 for mnist-demo, 5,000 for the other data sets)" in val.help


def test_durations_read_in_hours_and_minutes():
    from superconv.timing import format_duration

    assert format_duration(42) == "42 s"
    assert format_duration(12 * 60) == "12 min"
    assert format_duration(3 * 3600 + 25 * 60) == "3 h 25 min"
    assert format_duration(13736 * 3600) == "13,736 h (572 days)"


# Settings that differ from what `train --dataset mnist-demo` resolves by itself.
UNUSUAL = [
    "--model", "lenet", "--dataset", "mnist-demo", "--train-subset", "5000", "--val-size", "500",
    "--split-seed", "3", "--batch-size", "32", "--normalize", "mean_std", "--flip",
    "--crop-pad", "2", "--optimizer", "nesterov", "--momentum", "0.8", "--weight-decay", "5e-4",
    "--bn-maf", "0.9", "--bn-mode", "torch", "--precision", "fp32", "--seed", "2",
    "--eval-batch-size", "500", "--device", "cpu", "--threads", "1", "--no-progress",
]  # fmt: skip


def _next_words(out: str) -> list[str]:
    """The command on the line after the printed ``Next (...)`` line, as shlex reads it."""
    import shlex

    lines = out.splitlines()
    return shlex.split(lines[next(i for i, x in enumerate(lines) if x.startswith("Next")) + 1])


def test_lr_find_next_command_carries_the_settings_and_runs(tmp_path, capsys):
    """The printed Next: command, parsed and run as printed (issue 23 item 2): the run's
    config.json has every setting the range test used, the safe max_lr and the budget."""
    from superconv.suggest import CYCLE, DEFAULT

    lr = tmp_path / "lr"
    args = ["lr-find", *UNUSUAL, "--steps", "30", "--mode", "exp", "--start-lr", "1e-4"]
    args += ["--eval-every", "5"]
    assert main([*args, "--end-lr", "1", "--budget", "30", "--out", str(lr)]) == 0
    out = capsys.readouterr().out
    record = json.loads((lr / "range_test.json").read_text())
    suggestion = record["suggestion"]
    assert suggestion["rule"] == DEFAULT["rule"]  # the default rule, whichever it is
    words = _next_words(out)
    assert words[:2] == ["superconv", "train"]
    next_line = next(x for x in out.splitlines() if x.startswith("Next"))
    assert f"the safe max_lr {suggestion['safe_max_lr']:.3g}" in next_line
    assert "a 1cycle of 30 iterations, the --budget given" in next_line
    timed = r"(about \d+ s|under 1 s) at the [\d.]+ ms per step measured in the range test"
    assert re.search(timed, next_line), next_line
    run = tmp_path / "run"
    assert main([*words[1:], "--no-progress", "--out", str(run)]) == 0
    used = json.loads((lr / "config.json").read_text())["train_config"]
    trained = json.loads((run / "config.json").read_text())
    own = {
        "iterations",
        "eval_every",
        "checkpoint_every",
        "policy",
        "policy_params",
        "policy_built",
    }
    assert {k: v for k, v in trained.items() if k not in own} == {
        k: v for k, v in used.items() if k not in own
    }
    assert trained["iterations"] == 30 and trained["policy"] == "one_cycle"
    expected = CYCLE.policy_params(suggestion["safe_max_lr"])
    assert trained["policy_params"] == pytest.approx(expected, rel=1e-3)


def test_the_next_command_builders_example_runs():
    import doctest

    result = doctest.testmod(cli, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_next_command_carries_only_what_differs_from_the_resolved_defaults():
    """Parsed back by the same parser and resolution, the command gives the same config;
    a setting equal to the data set's resolved default is left out."""
    import shlex

    from superconv.cli import build_parser, next_command, resolve_train_config

    def parsed(command):
        args = build_parser().parse_args(shlex.split(command)[1:])
        return resolve_train_config(args, {})

    plain = TrainConfig(model="lenet", dataset="mnist-demo", batch_size=64, normalize="unit",
                        flip=False, val_size=1000)  # fmt: skip
    command = next_command(plain, 0.05, 300)
    for absent in ("--batch-size", "--normalize", "--flip", "--no-flip", "--crop-pad"):
        assert absent not in shlex.split(command), absent
    own = ("iterations", "eval_every", "checkpoint_every", "policy", "policy_params")
    for config, preset in (
        (plain, "auto"),
        (plain.replace(ghost_batch=16, bn_maf=0.99, dropout=0.2, log_every=5), "auto"),
        (TrainConfig(val_size=5000, optimizer="adamw", weight_decay=0.05), "auto"),
        (TrainConfig(val_size=5000, channels_last=False, compile=True), "paper"),
    ):
        command = next_command(config, 0.3, 500, preset)
        assert ("--preset paper" in command) == (preset == "paper")
        back = parsed(command)
        expected = config.replace(precision=AUTO) if config.precision == "auto" else config
        assert back.replace(**{k: getattr(config, k) for k in own}) == expected, command
        assert (back.iterations, back.policy, back.policy_params["max_lr"]) == (
            500,
            "one_cycle",
            0.3,
        )


# What `--precision auto` resolves to on this machine's default device.
AUTO = auto_precision(resolve_device("auto"))[0]


def test_precision_auto_is_resolved_said_and_recorded(monkeypatch, capsys):
    """bf16 on CPUs with native bf16 (measured parity), fp32 on others; the config records
    the choice, and an explicit precision is kept."""
    from superconv import step
    from superconv.cli import build_parser, resolve_train_config

    def resolve(*argv):
        args = build_parser().parse_args(["train", "--dataset", "mnist-demo", "--device", "cpu", *argv])
        return resolve_train_config(args, {}).precision

    monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: True)
    assert resolve() == "bf16"
    assert "Precision auto -> bf16: this CPU runs bf16 natively" in capsys.readouterr().out
    assert resolve("--precision", "fp32") == "fp32"
    assert "Precision auto" not in capsys.readouterr().out
    monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: False)
    assert resolve() == "fp32"
    assert "Precision auto -> fp32: no native bf16 on this CPU" in capsys.readouterr().out
    assert resolve("--precision", "bf16") == "bf16"  # asked for: emulated, but honoured
    assert step.auto_precision("cuda")[0] == "bf16"  # CUDA: as before


def test_dataset_defaults_preset_and_precedence():
    """preset < data set < TOML < flags; --preset paper is TrainConfig's defaults."""
    from superconv.cli import build_parser, resolve_train_config
    from superconv.config import TrainConfig

    def resolve(argv, file=None):
        args = build_parser().parse_args(["train", *argv])
        return resolve_train_config(args, file or {})

    mnist = resolve(["--dataset", "mnist"])
    assert (mnist.model, mnist.batch_size, mnist.normalize, mnist.flip) == (
        "lenet",
        64,
        "unit",
        False,
    )
    assert mnist.iterations == 1875  # 2 epochs of 60,000 at batch 64
    cifar = resolve(["--dataset", "cifar10"])
    assert (cifar.model, cifar.batch_size, cifar.flip, cifar.crop_pad, cifar.val_size) == (
        "resnet20",
        128,
        True,
        4,
        5000,
    )
    paper = TrainConfig(precision=AUTO)  # --precision auto: resolved here, recorded
    assert resolve(["--preset", "paper", "--dataset", "cifar10"]) == paper
    # TOML over the data set, flags over TOML
    assert resolve(["--dataset", "mnist"], {"batch_size": 32}).batch_size == 32
    assert (
        resolve(["--dataset", "mnist", "--batch-size", "16"], {"batch_size": 32}).batch_size == 16
    )
    # --epochs beside --iterations
    assert resolve(["--dataset", "mnist-demo", "--epochs", "1"]).iterations == 157  # 10,000 / 64
    assert TrainConfig().model == "resnet56" and TrainConfig().batch_size == 1000  # unchanged


def test_epochs_and_iterations_together_are_refused(capsys):
    assert main(["train", "--dataset", "mnist-demo", "--epochs", "1", "--iterations", "5"]) == 2
    assert "--epochs or --iterations" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fit / lr-find defaults
def _fake_fit(monkeypatch, seen, seconds_per_step=None):
    """fit_run replaced by a recorder of what the CLI resolved (no training)."""
    from types import SimpleNamespace

    from superconv import fit as fit_module

    def fake_fit_run(config, out, **kwargs):
        seen.update(kwargs, config=config)
        summary = {"final_test_acc": 90.0, "final_val_acc": 91.0, "run": "train"}
        if seconds_per_step is not None:
            summary["seconds_per_step"] = seconds_per_step
        return SimpleNamespace(
            record={"verdict": {"verdict": "checked by training"}, "notes": []},
            summary=summary,
            max_lr=0.1,
            policy_params={"div": 4},
            budget=SimpleNamespace(iterations=config.iterations),
            files={"markdown": out / "fit.md"},
        )

    monkeypatch.setattr(fit_module, "fit_run", fake_fit_run)


def _fake_lr_find(monkeypatch, seen):
    """lr_find replaced by a recorder of the config and budget the CLI resolved."""
    from types import SimpleNamespace

    from superconv import demo

    def fake_lr_find(config, out, **kwargs):
        seen.update(kwargs, config=config)
        curve = SimpleNamespace(notes=[], steps_run=10, losses=[1.0] * 10, stop_reason="completed")
        return SimpleNamespace(
            curve=curve, suggestion=None, suggestion_error="stub", files={"plot": "p", "json": "j"}
        )

    monkeypatch.setattr(demo, "lr_find", fake_lr_find)


def test_fit_resolves_the_data_sets_defaults_like_train(tmp_path, monkeypatch, capsys):
    """`fit --dataset mnist-demo` and nothing else: lenet, batch 64, unit normalisation, no
    flip, 3 epochs of the 9,000 images left after 1,000 are held out for validation."""
    seen: dict = {}
    _fake_fit(monkeypatch, seen)
    assert main(["fit", "--dataset", "mnist-demo", "--out", str(tmp_path / "f")]) == 0
    c = seen["config"]
    assert (c.model, c.batch_size, c.normalize, c.flip, c.crop_pad) == (
        "lenet",
        64,
        "unit",
        False,
        0,
    )
    assert c.val_size == 1000 and c.iterations == math.ceil(3 * 9000 / 64)
    assert seen["epochs"] is None and seen["evaluations"] == 10
    out = capsys.readouterr().out
    assert "Settings (preset auto):\n  model:     lenet" in out  # one line per group, at start
    for group in ("data:", "schedule:", "optimizer:", "batchnorm:", "run:"):
        assert f"\n  {group}" in out, group
    assert out.index("Settings") < out.index("Chosen:")


def test_fit_preset_paper_and_the_precedence(tmp_path, monkeypatch):
    seen: dict = {}
    _fake_fit(monkeypatch, seen)
    args = ["fit", "--dataset", "mnist-demo", "--no-progress"]
    assert main([*args, "--preset", "paper", "--out", str(tmp_path / "p")]) == 0
    paper = TrainConfig(precision=AUTO)  # the paper's; fit holds out its validation split
    assert seen["config"] == paper.replace(dataset="mnist-demo", val_size=1000)
    toml = tmp_path / "run.toml"
    toml.write_text('batch_size = 32\nnormalize = "mean_std"\n')
    assert main([*args, "--config", str(toml), "--out", str(tmp_path / "t")]) == 0
    c = seen["config"]  # TOML over the data set's defaults, which still fill the rest
    assert (c.batch_size, c.normalize, c.model, c.flip) == (32, "mean_std", "lenet", False)
    assert c.iterations == math.ceil(3 * 9000 / 32)  # the data set's epochs at the TOML's batch
    argv = [*args, "--config", str(toml), "--batch-size", "16", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "f")]) == 0
    c = seen["config"]  # flags over TOML
    assert (c.batch_size, c.normalize, c.iterations) == (16, "mean_std", math.ceil(9000 / 16))
    assert seen["epochs"] == 1.0  # fit_run counts the epochs on the data it loads
    assert main([*args, "--epochs", "1", "--iterations", "5", "--out", str(tmp_path / "x")]) == 2


def test_fit_resume_refuses_the_resolution_flags(tmp_path, capsys):
    for flag in (["--preset", "paper"], ["--epochs", "2"], ["--config", "x.toml"]):
        assert main(["fit", "--resume", str(tmp_path), *flag]) == 2
        assert f"drop {flag[0]}" in capsys.readouterr().err


def test_lr_find_resolves_like_train_and_its_budget(tmp_path, monkeypatch, capsys):
    seen: dict = {}
    _fake_lr_find(monkeypatch, seen)
    base = ["lr-find", "--dataset", "mnist-demo", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    c = seen["config"]
    assert (c.model, c.batch_size, c.normalize, c.flip, c.val_size) == (
        "lenet",
        64,
        "unit",
        False,
        1000,
    )
    assert seen["budget"] == math.ceil(3 * 9000 / 64)  # the data set's default budget
    assert "Settings (preset auto):" in capsys.readouterr().out
    assert main([*base, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert seen["budget"] == math.ceil(9000 / 64)
    assert main([*base, "--preset", "paper", "--out", str(tmp_path / "c")]) == 0
    c = seen["config"]
    assert (c.model, c.batch_size, c.flip, seen["budget"]) == ("resnet56", 1000, True, 10_000)
    assert main([*base, "--budget", "40", "--epochs", "1", "--out", str(tmp_path / "d")]) == 2
    assert "--budget N or --epochs E, not both" in capsys.readouterr().err


def test_fit_ends_with_a_next_command_for_the_same_cycle_longer(tmp_path, monkeypatch, capsys):

    from superconv.cli import build_parser, resolve_train_config

    seen: dict = {}
    _fake_fit(monkeypatch, seen, seconds_per_step=0.05)
    argv = ["fit", "--dataset", "mnist-demo", "--batch-size", "32", "--weight-decay", "5e-4"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Next"))
    budget = 2 * math.ceil(3 * 9000 / 32)
    assert f"a 1cycle of {budget:,} iterations, twice this fit's budget" in line
    assert "about 84 s at the 50 ms per step measured in this fit's training run" in line
    words = _next_words(out)
    back = resolve_train_config(build_parser().parse_args(words[1:]), {})
    fitted = seen["config"]
    for name in ("model", "dataset", "batch_size", "weight_decay", "val_size", "normalize", "flip"):
        assert getattr(back, name) == getattr(fitted, name), name
    assert (back.iterations, back.policy, back.policy_params["max_lr"]) == (
        budget,
        "one_cycle",
        0.1,
    )


def test_train_records_the_pace_after_the_warm_up(tmp_path, monkeypatch):
    """The ETA's pace comes from the steps after the warm-up: with a fake clock whose first
    steps take 10 s and the rest 0.1 s, the run's seconds per step is 0.1, not the mean."""
    import functools
    import itertools

    import superconv.train
    from superconv.timing import WARMUP_STEPS, Pace

    calls = itertools.count(1)  # train reads the clock once per log step: here every step

    def clock():
        k = next(calls)
        return 10.0 * min(k, WARMUP_STEPS) + 0.1 * max(k - WARMUP_STEPS, 0)

    monkeypatch.setattr(superconv.train, "Pace", functools.partial(Pace, clock=clock))
    out = tmp_path / "run"
    assert main(tiny_train(out, "--log-every", "1")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seconds_per_step"] == pytest.approx(0.1)
