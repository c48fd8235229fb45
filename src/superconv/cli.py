"""The ``superconv`` command line: a thin layer over the library functions of the same names.

=====================  ====================================================
``superconv lr-find``  :func:`superconv.demo.lr_find` (LR range test + suggest)
``superconv train``    :func:`superconv.train.train` (flags from TrainConfig)
``superconv fit``      :func:`superconv.fit.fit_run` (range test -> check -> 1cycle)
``superconv demo``     :func:`superconv.demo.demo`
``superconv data``     :func:`superconv.fetch.fetch`, :func:`superconv.data.load_dataset`
``superconv reproduce``  :func:`superconv.runner.reproduce`
``superconv report``   :func:`superconv.report.write_report`
=====================  ====================================================

:func:`main` returns the exit code; the console script (``superconv =
"superconv.cli:main"``) hands it to ``sys.exit``. Exit codes: 0 done, 2 a user
error (bad flag or value, missing data, unusable output folder; argparse's
own code for bad flags), 3 the training loss diverged, 130 interrupted by Ctrl-C
and 143 by SIGTERM (a run saves a checkpoint first), 1 anything unexpected
(traceback with ``--debug`` or ``SUPERCONV_DEBUG=1``). Errors go to stderr as ``superconv: error: ...``.

The ``train`` flags are generated from :class:`~superconv.train.TrainConfig`'s
fields (litgpt's way: the CLI follows the typed signature), so every field is
reachable and none can drift; :data:`FIELD_HELP` holds their descriptions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from superconv import __version__
from superconv.errors import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    DivergenceError,
    Interrupted,
    RunDirError,
    UserError,
    did_you_mean,
)

DEBUG_ENV = "SUPERCONV_DEBUG"

# One line per TrainConfig field: the --help text of the generated flag.
FIELD_HELP = {
    "model": "model name: resnet20/32/44/56/110 or resnet{6n+2} (the paper's), bottleneck56, "
    "resnext, densenet, lenet",
    "dataset": "cifar10, cifar100, mnist, fashion-mnist, mnist-demo (ships in the package), or "
    "folder:PATH: your own images, PATH/<class>/*.jpg|png (or PATH/train and PATH/val so laid "
    "out), streamed and decoded with Pillow (pip install 'superconv[images]')",
    "data_dir": "folder holding the data sets (default: $SUPERCONV_DATA, else "
    "~/.cache/superconv/data)",
    "train_subset": "train on a class-balanced subset of this many images (Table 1: 40k..10k)",
    "val_size": "images held out of the training set for validation (never the test set)",
    "split_seed": "seed of the subset / validation split (fixed across runs)",
    "iterations": "training iterations (the paper counts iterations, not epochs)",
    "batch_size": "images per iteration (the paper: 1000 = 8 GPUs x 125)",
    # the names are appended from superconv.schedules.POLICY_NAMES (one list, not two)
    "policy": "LR policy (cyclic: any CLR, takes stepsize= and mode=)",
    "policy_params": "policy parameter KEY=VALUE (repeatable; VALUE is a JSON literal, else a "
    "string), e.g. max_lr=3.0 or momentum=[0.95,0.85]",
    "optimizer": "sgd, nesterov, adam, adamw, adagrad, adadelta",
    "momentum": "momentum (Adam: beta1) when the policy does not cycle it (Table 6: 0.9)",
    "weight_decay": "L2 weight decay (section 6: 1e-4)",
    "bn_maf": "Caffe's batch-norm moving-average fraction (Table 1: 0.95 for 10k-iteration runs)",
    "bn_mode": "batch norm: caffe (debiased running average, the paper's) or torch",
    "ghost_batch": "images per batch-norm chunk (125 mimics the paper's 8 GPUs x 125)",
    "sync_bn": "with several GPUs (DDP): batch norm over the global batch (the paper: per GPU)",
    "dropout": "dropout before the last layer (Fig. 9b: 0.2)",
    "flip": "mirror half the training images (the authors' only augmentation)",
    "crop_pad": "pad-and-random-crop margin in pixels (0: none, as the paper)",
    "normalize": "mean_std (per-channel standardisation) or unit (pixels / 255, Caffe's LeNet)",
    "image_size": "folder:PATH only: side of the square crops, random-resized (8-100%% of the "
    "area) and flipped for training, centre crops for evaluation (default: 224)",
    "seed": "random seed of the weights, data order and augmentation",
    "eval_every": "iterations between evaluations (rows of metrics.csv)",
    "log_every": "iterations between reads of the loss (progress bar, NaN check)",
    "checkpoint_every": "iterations between checkpoints (a multiple of --eval-every)",
    "eval_batch_size": "images per evaluation batch",
    "estimator_k": "record the Hessian-free LR estimate (eq. 8) every K iterations (Fig. 5); "
    "writes estimates.csv and estimates.png",
    "device": "auto (a GPU if there is one), cpu, cuda or cuda:N",
    "precision": "auto (bf16 autocast on CUDA and on CPUs with native bf16, where it measured "
    "accuracy parity; fp32 elsewhere; the choice is printed and recorded), fp32, bf16, fp16 "
    "(autocast with a gradient scaler) or fp64 (for checks)",
    "accumulation_steps": "split each batch into N equal micro-batches, their gradients summed "
    "(the batch's memory / N, same updates; BN sees the micro-batches)",
    "channels_last": "channels-last memory layout",
    "compile": "torch.compile the model",
    "deterministic": "ask torch for deterministic kernels",
    "threads": "CPU threads (default: torch's choice)",
}

# The TrainConfig fields that matter for an LR range test (the policy and the
# loop's bookkeeping do not: the ramp sets the LR).
LR_FIND_FIELDS = (
    "model", "dataset", "data_dir", "train_subset", "val_size", "split_seed", "batch_size",
    "optimizer", "momentum", "weight_decay", "bn_maf", "bn_mode", "ghost_batch", "dropout",
    "flip", "crop_pad", "normalize", "seed", "eval_batch_size", "device", "precision",
    "channels_last", "threads", "image_size",
)  # fmt: skip

# Validation images held out for the range test when --val-size is not given.
DEFAULT_VAL_SIZE = {"mnist-demo": 1000}
DEFAULT_VAL_SIZE_OTHER = 5000
# What lr-find and fit's --help say of --val-size: the sizes they resolve, not 0.
_VAL_SIZE_SHOWN = {
    "val_size": ", ".join(f"{v:,} for {k}" for k, v in DEFAULT_VAL_SIZE.items())
    + f", {DEFAULT_VAL_SIZE_OTHER:,} for the other data sets"
}

TRAIN_EXAMPLES = """\
examples:
  superconv train --preset paper --dataset cifar10 --policy clr \\
      --policy-param min_lr=0.1 --policy-param max_lr=3.0    # ResNet-56, batch 1000, 10k
  superconv train --model lenet --dataset mnist-demo --normalize unit --no-flip \\
      --batch-size 64 --iterations 420 --policy one_cycle --policy-param max_lr=0.1 \\
      --policy-param momentum=[0.95,0.85] --device cpu --out runs/lenet-1cycle
  superconv train --config run.toml --seed 2        # flags override the file
  superconv train --resume runs/lenet-1cycle        # continue an interrupted run

A TOML file holds TrainConfig fields at the top level and the policy's
parameters in a [policy_params] table. Changing --policy drops the file's
policy_params (they belong to the other policy); --policy-param adds to them.
"""

LR_FIND_EXAMPLES = """\
examples:
  superconv lr-find --dataset mnist-demo --steps 300   # the data set's defaults (LeNet, batch 64)
  superconv lr-find --preset paper --dataset cifar10 --steps 5000   # the paper: 0 -> 3, linear
  superconv lr-find --model lenet --dataset mnist-demo --normalize unit --no-flip \\
      --batch-size 64 --mode exp --start-lr 1e-4 --end-lr 3 --steps 300 --eval-every 10
"""

FIT_EXAMPLES = """\
examples:
  superconv fit --model lenet --dataset mnist-demo --normalize unit --no-flip \\
      --batch-size 64 --iterations 420 --device cpu --threads 1 --out fit-lenet
  superconv fit --model resnet56 --dataset cifar10 --epochs 20 --repeats 3 --out fit-r56
  superconv fit --dataset mnist-demo --out fit-demo   # the data set's defaults, 3 epochs
  superconv fit --resume fit-lenet          # continue an interrupted fit in its phase

Phases: LR range test (the default rule's test, within 10% of the budget unless
--range-steps says more)
-> check: successive halving over fresh short 1cycles at 2, 1, 1/2 and 1/4 x the
suggestion (range test + check <= --tune-budget x the training run) -> the
chosen 1cycle for the whole budget -> test accuracy. Writes fit.json (after each
phase), fit.md and figures, check/ and train/ run folders.
"""

# The TrainConfig fields that matter for a fit (the policy is the fit's own).
FIT_FIELDS = (*LR_FIND_FIELDS, "iterations", "eval_every", "checkpoint_every", "log_every",
              "train_subset")  # fmt: skip

DEMO_EXAMPLES = """\
examples:
  superconv demo                       # about two minutes on one CPU core
  superconv demo --seeds 3 --out demo3 # repeat the final runs over 3 seeds
"""


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" hints for unknown choices.

    Negative numbers in scientific notation (``--weight-decay -1e-4``) and ``-inf``
    are read as values, as ``-0.1`` is (then checked like any value); argparse
    (< 3.14) took them for flags and said "expected one argument".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)$", re.IGNORECASE
        )

    def error(self, message: str) -> None:  # type: ignore[override]
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        super().error(message)


def _unrecognized(parser: argparse.ArgumentParser, extra: Sequence[str]) -> str:
    options = [s for action in parser._actions for s in action.option_strings]
    hints = [
        f"{token}{hint}"
        for token in extra
        if token.startswith("-") and (hint := did_you_mean(token.split("=")[0], options))
    ]
    return "unrecognized arguments: " + " ".join(extra) + (f" ({' '.join(hints)})" if hints else "")


def _annotation_parser(name: str, annotation: str) -> Callable[[str], Any]:
    """A string -> value converter for a TrainConfig field's annotation."""
    nullable = "None" in annotation
    base = annotation.replace("| None", "").strip()
    convert = {"int": int, "float": float, "str": str}[base]

    def parse(text: str) -> Any:
        if nullable and base != "str" and text.lower() in ("none", "null"):
            return None
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an' if base == 'int' else 'a'} {base}"
                + (" (or none)" if nullable and base != "str" else "")
            ) from None

    parse.__name__ = base
    return parse


def _key_value(text: str) -> tuple[str, Any]:
    """``key=value`` with value a JSON literal (3.0, [0.95,0.85], null, true), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


_METAVARS = {"int": "N", "float": "X", "str": "NAME", "data_dir": "DIR", "device": "DEVICE"}


def _add_config_flags(
    parser: argparse.ArgumentParser,
    names: Iterable[str] | None = None,
    shown_defaults: dict[str, str] | None = None,
) -> None:
    """One flag per TrainConfig field (all, or ``names``); defaults are SUPPRESSed.

    Each help line ends in one "(default: ...)": TrainConfig's value, or the
    subcommand's own where it resolves another (``shown_defaults``), or none where
    the help text already says it.

    An absent flag leaves no attribute on the namespace, so the caller knows
    exactly which fields the user set (and lets them override a config file).
    """
    from superconv.config import POLICY_NAMES, TrainConfig

    wanted = set(names) if names is not None else None
    defaults = TrainConfig()
    group = parser.add_argument_group("training configuration (superconv.train.TrainConfig)")
    for field in dataclasses.fields(TrainConfig):
        if wanted is not None and field.name not in wanted:
            continue
        default = getattr(defaults, field.name)
        shown = json.dumps(dict(default)) if field.name == "policy_params" else default
        # A field added to TrainConfig without a line here still gets its flag.
        text = FIELD_HELP.get(field.name, f"TrainConfig.{field.name}")
        if field.name == "policy":
            text += ": " + ", ".join(POLICY_NAMES)
        if shown_defaults and field.name in shown_defaults:
            shown = shown_defaults[field.name]
        elif shown is None:
            shown = "none"
        if "(default:" not in text:
            text = f"{text} (default: {shown})"
        flag = "--" + field.name.replace("_", "-")
        if field.name == "policy_params":
            group.add_argument(
                "--policy-param",
                dest="policy_params",
                action="append",
                type=_key_value,
                metavar="KEY=VALUE",
                default=argparse.SUPPRESS,
                help=text,
            )
        elif str(field.type) == "bool":
            group.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            group.add_argument(
                flag,
                dest=field.name,
                type=_annotation_parser(field.name, str(field.type)),
                metavar=_METAVARS.get(field.name) or _METAVARS[str(field.type).split(" ")[0]],
                default=argparse.SUPPRESS,
                help=text,
            )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the traceback of unexpected errors (or set {DEBUG_ENV}=1)",
    )


def _tensorboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also log to TensorBoard event files in DIR, beside the CSV/JSON records "
        "(needs pip install 'superconv[tensorboard]')",
    )


def _no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars (for logs and scripts)",
    )


PRESET_HELP = (
    "auto: the data set's defaults (MNIST family: lenet, batch 64, unit normalisation, no "
    "flip, 2-3 epochs; CIFAR: resnet20, batch 128, flip + pad-4 crop, 5,000 validation "
    "images, 5 epochs); paper: the paper's full settings (TrainConfig's defaults). "
    "Precedence: preset < data set < TOML < flags (default: auto)"
)


def _resolved_shown() -> dict[str, str]:
    """What --help says of the fields the data sets' defaults set: the value by data set
    under ``--preset auto`` and TrainConfig's (the paper's) otherwise, as resolved."""
    from superconv.config import DATASET_DEFAULTS, TrainConfig

    paper = TrainConfig()
    names = dict.fromkeys(k for layer in DATASET_DEFAULTS.values() for k in layer)
    shown = {}
    for name in names:
        field = "iterations" if name == "epochs" else name
        by_value: dict[Any, list[str]] = {}
        for dataset, layer in DATASET_DEFAULTS.items():
            by_value.setdefault(layer.get(name, getattr(paper, field)), []).append(dataset)
        unit = " epochs" if name == "epochs" else ""
        parts = [f"{_word(v)}{unit} for {', '.join(d)}" for v, d in by_value.items()]
        shown[field] = (
            "; ".join(parts) + f"; else and with --preset paper {_word(getattr(paper, field))}"
        )
    for name in ("eval_every", "checkpoint_every"):
        share = "a tenth" if name == "eval_every" else "a fifth"
        shown[name] = f"{share} of the run; with --preset paper {getattr(paper, name)}"
    return shown


def _word(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def _resolution_flags(parser: argparse.ArgumentParser, epochs_help: str) -> None:
    """--config, --preset and --epochs: what :func:`resolve_train_config` reads, the same
    for every command that takes a TrainConfig."""
    from superconv.config import PRESETS

    parser.add_argument(
        "--config", metavar="TOML", help="TrainConfig fields from a TOML file (flags override it)"
    )
    # None (not given) reads as auto; --resume refuses it when given
    parser.add_argument("--preset", choices=PRESETS, default=None, help=PRESET_HELP)
    parser.add_argument("--epochs", type=float, metavar="E", help=epochs_help)


_FORMATTER = argparse.RawDescriptionHelpFormatter
_DATA_DIR_HELP = "data folder (else $SUPERCONV_DATA, else ~/.cache/superconv/data)"


def build_parser() -> argparse.ArgumentParser:
    """The ``superconv`` parser (subcommands set ``handler``)."""
    parser = _Parser(
        prog="superconv",
        description="Super-convergence made practical (Smith & Topin 2017): the LR range test, "
        "1cycle / CLR training, and reproductions of the paper's tables and figures.",
        epilog="examples:\n  superconv demo\n  superconv lr-find --help\n  superconv fit --help\n"
        "  superconv train --help\n"
        "  superconv data check",
        formatter_class=_FORMATTER,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"superconv {__version__}")
    _common(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _add_lr_find_parser(commands)
    _add_train_parser(commands)
    _add_fit_parser(commands)
    _add_demo_parser(commands)
    _add_data_parser(commands)
    _add_reproduce_parser(commands)
    _add_report_parser(commands)
    return parser


def _command(
    commands: Any, name: str, help: str, epilog: str | None = None, **kw: Any
) -> argparse.ArgumentParser:
    """A subcommand's parser: its help is also its description; ``--debug`` on it too."""
    sub = commands.add_parser(
        name,
        help=help,
        description=help,
        epilog=epilog,
        formatter_class=_FORMATTER,
        allow_abbrev=False,
        **kw,
    )
    _common(sub)
    sub.set_defaults(parser=sub)
    return sub


def _add_train_config_group(
    sub: argparse.ArgumentParser,
    names: Iterable[str] | None = None,
    shown_defaults: dict[str, str] | None = None,
) -> None:
    """The flags every training command ends with: --tensorboard, --no-progress and
    the TrainConfig group (all fields, or ``names``)."""
    _tensorboard(sub)
    _no_progress(sub)
    _add_config_flags(sub, names, shown_defaults)


def _add_lr_find_parser(commands: Any) -> None:
    sub = _command(
        commands,
        "lr-find",
        "LR range test (paper section 3, Fig. 2): train loss, validation loss and accuracy "
        "against a growing LR, with suggested LR bounds",
        LR_FIND_EXAMPLES,
    )
    for flag, kind, default, metavar, text in (
        ("--steps", int, None, "N", "iterations (default: the length the default rule was "
         "chosen at, a share of the training budget: superconv.suggest.DEFAULT_TEST; printed "
         "at start. The paper ran 5,000 and more)"),
        ("--start-lr", float, None, "X", "first LR (default: the ramp's for the optimizer: "
         "exp 1e-4 -> 10, Adam/AdamW 1e-6 -> 1; linear 0 -> 3, Adam/AdamW 0 -> 0.1)"),
        ("--end-lr", float, None, "X", "last LR (default: the ramp's)"),
        ("--eval-every", int, None, "N", "iterations between validation evaluations "
         "(default: 20 evaluations per test, at most one per 3 steps)"),
        ("--eval-batches", int, None, "N", "validation batches per evaluation (default: "
         "enough for 2,000 images)"),
    ):  # fmt: skip
        sub.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
    sub.add_argument(
        "--mode",
        choices=("linear", "exp"),
        default=None,
        help="LR ramp (default: the one the default rule was chosen on, "
        "superconv.suggest.DEFAULT_TEST; linear is the paper's 0 -> 3)",
    )
    sub.add_argument(
        "--rule",
        default="default",
        metavar="NAME",
        help="how to read max_lr from the curve: default (the suggestion benchmark's choice), "
        "steepest, lightning, min_loss_10, valley, plateau_edge, loss_edge, val_loss_edge "
        "(default: default)",
    )
    sub.add_argument(
        "--budget",
        type=int,
        default=None,
        metavar="N",
        help="iterations of the training run the cycle is for: rules that scale with it use "
        "it, and the Next: command trains it (default: the data set's budget, see --preset)",
    )
    _resolution_flags(
        sub, "the training budget in epochs of the training split (instead of --budget)"
    )
    sub.add_argument(
        "--no-adapt",
        dest="adapt",
        action="store_false",
        help="do not restart a test that breaks down in its first fifth (default: restart "
        "below that LR with an exp ramp, at most twice)",
    )
    sub.add_argument(
        "--out", default="lr-find", metavar="DIR", help="output folder (default: ./lr-find)"
    )
    _add_train_config_group(sub, LR_FIND_FIELDS, {**_resolved_shown(), **_VAL_SIZE_SHOWN})
    sub.set_defaults(handler=_cmd_lr_find)


def _add_train_parser(commands: Any) -> None:
    sub = _command(
        commands, "train", "train one run (any policy) into a run folder", TRAIN_EXAMPLES
    )
    _resolution_flags(
        sub,
        "training budget in epochs of the training split (instead of "
        "--iterations; default: the data set's, see --preset)",
    )
    sub.add_argument(
        "--out", metavar="DIR", help="run folder (default: runs/MODEL-DATASET-POLICY-seedSEED)"
    )
    sub.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
    )
    _add_train_config_group(sub, shown_defaults=_resolved_shown())
    sub.set_defaults(handler=_cmd_train)


def _add_fit_parser(commands: Any) -> None:
    sub = _command(
        commands,
        "fit",
        "range test -> suggestion -> budget-matched check (successive halving) -> train the "
        "chosen 1cycle, with a report",
        FIT_EXAMPLES,
    )
    _resolution_flags(
        sub,
        "training budget in epochs of the training split (or --iterations "
        "N; default: the data set's, see --preset)",
    )
    for flag, kind, metavar, text in (
        ("--tune-budget", float, "X", "range test + check <= X x the training run "
         "(default: 1.0)"),
        ("--repeats", int, "K", "range tests on K seeds; reports the spread of max_lr "
         "(default: 1)"),
        ("--range-steps", int, "N", "range-test iterations (default: the default rule's "
         "test, a share of the budget, superconv.suggest.DEFAULT_TEST, within a cap of 10%%; "
         "more exceeds the cap, with a notice)"),
        ("--start-lr", float, "X", "range test's first LR (default: the default test's ramp "
         "for the optimizer)"),
        ("--end-lr", float, "X", "range test's last LR (default: the default test's ramp)"),
        ("--factors", _factors, "F,F,...", "the check's candidates, as multiples of the "
         "suggestion (default: 4,2,1,0.5)"),
    ):  # fmt: skip
        sub.add_argument(flag, type=kind, metavar=metavar, help=text)
    sub.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the check: train the suggestion",
    )
    sub.add_argument("--out", metavar="DIR", help="fit folder (default: fits/MODEL-DATASET)")
    sub.add_argument("--resume", metavar="DIR", help="continue the fit in DIR in its phase")
    _add_train_config_group(sub, FIT_FIELDS, {**_resolved_shown(), **_VAL_SIZE_SHOWN})
    sub.set_defaults(handler=_cmd_fit)


def _add_demo_parser(commands: Any) -> None:
    sub = _command(
        commands,
        "demo",
        "LR range test, then 1cycle against a swept multistep baseline at the same budget "
        "(LeNet on the bundled MNIST subset; CPU, no network, a few minutes)",
        DEMO_EXAMPLES,
    )
    sub.add_argument(
        "--out", default="superconv-demo", help="output folder (default: ./superconv-demo)"
    )
    sub.add_argument("--quick", action="store_true", help="a tiny budget (seconds; for tests)")
    sub.add_argument(
        "--seeds", type=int, default=1, help="seeds of the two final runs (default: 1)"
    )
    sub.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    sub.add_argument(
        "--threads",
        type=_annotation_parser("threads", "int | None"),
        default=1,
        help="CPU threads (default: 1, fastest for LeNet, and robust when the cores are shared; none: torch's choice)",
    )
    _no_progress(sub)
    sub.set_defaults(handler=_cmd_demo)


def _add_data_parser(commands: Any) -> None:
    sub = _command(commands, "data", "get and check the data sets")
    data = sub.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    data.required = True
    _add_data_fetch_parser(data)
    _add_data_check_parser(data)


def _add_data_fetch_parser(data: Any) -> None:
    fetch = data.add_parser(
        "fetch",
        help="download a data set's official files (checksummed, resumable)",
        description="Download the official files of a data set into the data folder, verify "
        "their published MD5 sums, and extract them where superconv looks for them.",
        epilog="examples:\n  superconv data fetch cifar10\n  superconv data fetch mnist --data-dir /data",
        formatter_class=_FORMATTER,
        allow_abbrev=False,
    )
    _common(fetch)
    fetch.set_defaults(parser=fetch, handler=_cmd_data_fetch)
    fetch.add_argument("name", metavar="NAME", help="cifar10, cifar100, mnist or fashion-mnist")
    fetch.add_argument("--data-dir", help=_DATA_DIR_HELP)
    fetch.add_argument(
        "--url-base", help="download from this server instead (else $SUPERCONV_URL_BASE)"
    )
    fetch.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="do not load the data set after downloading",
    )
    _no_progress(fetch)


def _add_data_check_parser(data: Any) -> None:
    check = data.add_parser(
        "check",
        help="report which data sets are present and valid",
        description="Load every data set from the data folder, checking sizes, formats and "
        "checksums, and print a table of what is present.",
        formatter_class=_FORMATTER,
        allow_abbrev=False,
    )
    _common(check)
    check.set_defaults(parser=check, handler=_cmd_data_check)
    check.add_argument("--data-dir", help=_DATA_DIR_HELP)


def _add_reproduce_parser(commands: Any) -> None:
    """superconv.paper's catalogue, run by superconv.runner."""
    sub = _command(
        commands,
        "reproduce",
        "reproduce one of the paper's tables or figures (runs over seeds, then a report)",
        "examples:\n  superconv reproduce --list\n  superconv reproduce table1-clr-range --seeds 3 --dry-run",
    )
    sub.add_argument(
        "experiment", nargs="?", metavar="EXPERIMENT", help="experiment id (see --list)"
    )
    sub.add_argument("--list", action="store_true", help="list the experiments")
    sub.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default: 3)")
    sub.add_argument(
        "--scale",
        default="small",
        help="small (minutes on a CPU), reduced (CPU hours) or full (the paper's setting); default: small",
    )
    sub.add_argument("--out", default="results", help="results folder (default: ./results)")
    sub.add_argument("--data-dir", help=_DATA_DIR_HELP)
    sub.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    sub.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per run (default: torch's choice; 1 is fastest on a shared machine)",
    )
    sub.add_argument(
        "--only",
        action="append",
        metavar="STEP",
        help="run only the steps (rows) matching this glob, with the sweeps/range tests they "
        "need; repeatable (e.g. --only 'maf0.95-*' --only 'maf0.999-*')",
    )
    sub.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs and the estimated time; train nothing",
    )
    _no_progress(sub)
    sub.set_defaults(handler=_cmd_reproduce)


def _add_report_parser(commands: Any) -> None:
    """superconv.report's command."""
    sub = _command(
        commands,
        "report",
        "Markdown tables (with the paper's numbers beside ours) from a results folder; "
        "or any run folder's summary (train, lr-find, fit, reproduce), several compared",
    )
    sub.add_argument(
        "results",
        nargs="*",
        default=["results"],
        metavar="FOLDER",
        help="a results folder (default: ./results), or one or more run folders: one gives "
        "its summary, several a comparison table and their curves overlaid",
    )
    sub.add_argument(
        "--out",
        help="Markdown file to write, or with several run folders the image of their "
        "overlaid curves (default: inside the results folder; ./compare.png for run folders)",
    )
    sub.add_argument(
        "--readme",
        metavar="FILE",
        help="also put the headline table between the results markers of FILE (e.g. README.md)",
    )
    sub.set_defaults(handler=_cmd_report)


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            owner = getattr(args, "parser", parser)
            owner.error(_unrecognized(owner, extra))
    except SystemExit as exc:  # argparse: --help, --version (0) and bad flags (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with _sigterm_as_interrupt():
        return _run(args, debug)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Interrupted` (exit 143) like Ctrl-C raises KeyboardInterrupt,
    so a command stopped by a scheduler or ``kill`` ends as cleanly as one stopped by
    Ctrl-C (the training loop takes the signal over and checkpoints first)."""

    def terminate(signum: int, frame: Any) -> None:
        raise Interrupted("terminated (SIGTERM)", signum=signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        return int(args.handler(args) or 0)
    except DivergenceError as exc:
        return _fail(f"training diverged: {exc}", EXIT_DIVERGED, debug)
    except UserError as exc:
        return _fail(str(exc), EXIT_USER_ERROR, debug)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        print(f"superconv: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)  # 143 after SIGTERM
    except OSError as exc:  # a file or folder the user pointed at: unreadable, full disk...
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}.{_os_advice(exc)}", EXIT_USER_ERROR, debug)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a short message
        return _fail(
            f"unexpected {type(exc).__name__}: {exc}. This is a bug; please report it with "
            f"the output of the same command with --debug.",
            1,
            debug,
        )


def _os_advice(exc: OSError) -> str:
    """What to do about an OS error at a write (files are written atomically, so the
    previous version of the file named is intact)."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            " The disk is full: free space there (or choose another folder), then run the "
            "same command again; files written before are intact (a run continues from its "
            "last checkpoint with --resume RUN_DIR)."
        )
    if exc.errno == errno.EIO:
        return (
            " The disk failed to read or write: check it (dmesg), then run the same command "
            "again; files written before are intact (a run continues with --resume RUN_DIR)."
        )
    if exc.errno == errno.EROFS:
        return " The file system is read-only: choose a folder you can write to."
    return ""


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"superconv: error: {message}", file=sys.stderr)
    return code


# ----------------------------------------------------------------------------- configs
def _flags_given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _config_fields() -> tuple[str, ...]:
    from superconv.config import TrainConfig

    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict, with errors that name the file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path} not found.") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a folder; give a .toml file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "TOML files are UTF-8: save it as UTF-8."
        ) from None


def config_from_args(
    args: argparse.Namespace,
    file: dict[str, Any] | None = None,
    fields: Iterable[str] | None = None,
) -> Any:
    """TrainConfig from (defaults <- ``file`` <- flags of ``fields``, default all).

    ``policy_params``: the file's (or the default's) when the policy stays the
    same, none when ``--policy`` names another one; ``--policy-param`` pairs are
    added on top.
    """
    from superconv.config import TrainConfig

    file = dict(file or {})
    defaults = TrainConfig()
    flags = _flags_given(args, _config_fields() if fields is None else fields)
    pairs = flags.pop("policy_params", [])
    base_policy = file.get("policy", defaults.policy)
    policy = flags.get("policy", base_policy)
    if policy != base_policy:
        params: dict[str, Any] = {}
    elif "policy_params" in file:
        params = dict(file["policy_params"])
    else:
        params = dict(defaults.policy_params)
    params.update(pairs)
    return TrainConfig.from_dict({**file, **flags, "policy_params": params})


def resolve_train_config(
    args: argparse.Namespace,
    file: dict[str, Any] | None = None,
    command_defaults: dict[str, Any] | None = None,
    fields: Iterable[str] | None = None,
    announce: bool = True,
) -> Any:
    """The TrainConfig of ``train``, ``lr-find`` and ``fit``: one resolution for all three.

    Precedence: TrainConfig's defaults < ``command_defaults`` (lr-find and fit hold
    out a validation split) < the preset (``--preset auto``: the data set's
    defaults, :data:`superconv.config.DATASET_DEFAULTS`; ``paper``: none) < the
    TOML ``file`` < flags. The budget: ``--epochs`` or ``--iterations`` (not both),
    else the data set's epochs under ``auto`` (of the training split left after
    the validation images and any subset), else TrainConfig's. A budget in epochs
    or under ``auto`` evaluates every tenth of the run and checkpoints every fifth,
    unless those are set. TrainConfig's own defaults never change, so committed
    runs keep their identity. ``fields``: the TrainConfig fields the command takes
    as flags (default all; lr-find's own ``--eval-every`` is not the field). Precision
    ``auto`` is resolved on the config's device (:func:`superconv.step.auto_precision`),
    said when ``announce``, and the config records the result.
    """
    from superconv.config import DATASET_DEFAULTS, TrainConfig, iterations_for_epochs

    file = dict(file or {})
    fields = _config_fields() if fields is None else tuple(fields)
    given = {**file, **_flags_given(args, fields)}
    epochs = getattr(args, "epochs", None)
    if epochs is not None and "iterations" in given:
        raise UserError("give --epochs or --iterations, not both.")
    auto = (getattr(args, "preset", None) or "auto") == "auto"
    layer: dict[str, Any] = {}
    if auto:
        layer = dict(DATASET_DEFAULTS.get(given.get("dataset", TrainConfig().dataset), {}))
        if epochs is None and "iterations" not in given:
            epochs = layer.get("epochs")
        layer.pop("epochs", None)
    config = config_from_args(args, {**(command_defaults or {}), **layer, **file}, fields)
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes["iterations"] = iterations_for_epochs(
            epochs, config.dataset, config.batch_size, config.val_size, config.train_subset
        )
    if (auto or epochs is not None) and not {"eval_every", "checkpoint_every"} & set(given):
        every = max(1, changes.get("iterations", config.iterations) // 10)
        changes.update(eval_every=every, checkpoint_every=2 * every)
    if config.precision == "auto":  # the run's config records what it trains in
        changes["precision"] = _auto_precision(config.device, announce)
    return config.replace(**changes) if changes else config


def _auto_precision(device: str, announce: bool = True) -> str:
    """``--precision auto`` resolved on ``device`` (:func:`superconv.step.auto_precision`)."""
    from superconv.config import resolve_device
    from superconv.step import auto_precision

    precision, why = auto_precision(resolve_device(device))
    if announce:
        _say(f"Precision auto -> {precision}: {why}.")
    return precision


def _read_config_file(args: argparse.Namespace) -> dict[str, Any]:
    """``--config``'s TOML as a dict ({} without it), errors about its content naming it."""
    from superconv.config import TrainConfig

    if not getattr(args, "config", None):
        return {}
    file = read_toml(args.config)
    try:
        TrainConfig.from_dict(file)
    except UserError as exc:
        raise UserError(f"{args.config}: {exc}") from exc
    return file


def _validation_default(args: argparse.Namespace, file: dict[str, Any]) -> dict[str, Any]:
    """lr-find's and fit's own default: a validation split held out for their readings."""
    from superconv.config import TrainConfig

    dataset = getattr(args, "dataset", None) or file.get("dataset") or TrainConfig().dataset
    return {"val_size": _default_val_size(dataset)}


def _print_settings(args: argparse.Namespace, config: Any, schedule: str | None = None) -> None:
    """The resolved config at the start of a command, one line per group."""
    from superconv.config import describe_config

    preset = getattr(args, "preset", None) or "auto"
    _say(f"Settings (preset {preset}):\n" + "\n".join(describe_config(config, schedule)))


def _check_early(config: Any) -> None:
    """Refuse bad names and values before loading any data (cheap checks only)."""
    import torch

    from superconv.models import build_model
    from superconv.train import make_policy

    config.validate()
    make_policy(config)
    with torch.device("meta"):  # no memory, no time: only the name is checked
        build_model(config.model)


def _default_val_size(dataset: str) -> int:
    """lr-find's and fit's --val-size when not given; none for your own images (their size
    is unknown until scanned: say --val-size N, a multiple of the class count)."""
    if dataset.startswith("folder:"):
        return 0
    return DEFAULT_VAL_SIZE.get(dataset, DEFAULT_VAL_SIZE_OTHER)


def _dataset_tag(dataset: str) -> str:
    """The data set's part of a default output folder name (folder:PATH -> folder-NAME)."""
    if dataset.startswith("folder:"):
        return "folder-" + (Path(dataset[len("folder:") :]).name or "images")
    return dataset


# ----------------------------------------------------------------------------- lr-find
def lr_find_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """lr-find's TrainConfig (by :func:`resolve_train_config`) and its ``--config`` file.

    The config's ``iterations`` is the training run the cycle is for: ``--budget``,
    else the resolved budget (``--epochs``, the file's, the data set's default under
    ``--preset auto``, else TrainConfig's).
    """
    if args.budget is not None and args.epochs is not None:
        raise UserError("give the training budget as --budget N or --epochs E, not both.")
    if args.budget is not None and args.budget < 1:
        raise UserError(f"--budget must be a positive number of iterations, got {args.budget}.")
    file = _read_config_file(args)
    config = resolve_train_config(args, file, _validation_default(args, file), LR_FIND_FIELDS)
    if args.budget is not None:
        config = config.replace(iterations=args.budget)
    return config, file


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from superconv.demo import lr_find
    from superconv.suggest import default_range_test

    config, file = lr_find_config(args)
    budget = config.iterations
    _check_early(config)
    test = default_range_test(config.optimizer, budget, args.mode)
    ramp = _lr_find_ramp(args, config, test)
    _say_lr_find_plan(config, ramp, test, budget)
    _print_settings(args, config, f"for a 1cycle read from the test ({args.rule} rule)")
    result = lr_find(
        config,
        args.out,
        **ramp,
        mode=test["mode"],
        progress=args.progress,
        rule=args.rule,
        budget=budget,
        adapt=args.adapt,
        tensorboard=args.tensorboard,
    )
    if not _is_main():
        return 0
    curve, s = result.curve, result.suggestion
    for note in curve.notes:
        print(f"Adapted: {note}.")
    ran = curve.steps_run or len(curve.losses)
    cost = f" {ran:,} steps in all: {ran / budget:.0%} of the {budget:,}-iteration budget."
    print(f"Ran {len(curve.losses)} of {ramp['num_steps']} iterations: {curve.stop_reason}.{cost}")
    if s is None:
        print(f"No suggestion: {result.suggestion_error}")
    else:
        _print_suggestion(s, result.others)
        print_next(
            config,
            s.safe_max_lr,
            budget,
            what=f"the safe max_lr {s.safe_max_lr:.3g} of rule {s.rule!r}",
            budget=_budget_source(args, file, config),
            seconds_per_step=result.seconds_per_step,
            measured="measured in the range test after its warm-up (evaluations not counted)",
            preset=args.preset or "auto",
        )
    print(f"Wrote {result.files['plot']} and {result.files['json']}")
    return 0


def _lr_find_ramp(args: argparse.Namespace, config: Any, test: dict[str, Any]) -> dict[str, Any]:
    """lr_find's start_lr, end_lr, num_steps, eval_every and eval_batches: the flags, else
    the default test's (20 evaluations per test on <= 2,000 images, with a validation split)."""
    start_lr = test["start_lr"] if args.start_lr is None else args.start_lr
    end_lr = test["end_lr"] if args.end_lr is None else args.end_lr
    steps = test["num_steps"] if args.steps is None else args.steps
    eval_every, eval_batches = args.eval_every, args.eval_batches
    if config.val_size > 0:  # the benchmark's evaluations: 20 per test on <= 2,000 images
        eval_every = eval_every or max(1, steps // min(20, max(1, steps // 3)))
        eval_batches = eval_batches or max(1, test["eval_images"] // config.eval_batch_size)
    return {
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_steps": steps,
        "eval_every": eval_every,
        "eval_batches": eval_batches,
    }


def _say_lr_find_plan(config: Any, ramp: dict[str, Any], test: dict[str, Any], budget: int) -> None:
    steps, eval_batches = ramp["num_steps"], ramp["eval_batches"]
    _say(
        f"LR range test: {config.model} on {config.dataset}, lr {ramp['start_lr']:g} -> "
        f"{ramp['end_lr']:g} ({test['mode']}) over {steps} iterations at batch "
        f"{config.batch_size} ({steps / budget:.0%} of the {budget:,}-iteration budget); "
        + (
            f"validation on {config.val_size:,} images held out of the training set, "
            f"{min(config.val_size, (eval_batches or 0) * config.eval_batch_size):,} per "
            "evaluation."
            if eval_batches
            else "no validation split (train loss only)."
        )
    )


def _print_suggestion(s: Any, others: dict[str, float | str]) -> None:
    """The suggestion's values with their reasons, and the other rules' max_lr."""
    print(f"Suggestion by rule {s.rule!r} ({s.reasons['signal']}):")
    rows = (
        ("max_lr", f"{s.max_lr:.4g}", s.reasons["max_lr"]),
        ("safe_max_lr", f"{s.safe_max_lr:.4g}", s.reasons["safe_max_lr"]),
        ("band", f"{s.band[0]:.3g}..{s.band[1]:.3g}", "within 2x of max_lr, below the edge"),
        ("min_lr", f"{s.min_lr:.4g}", s.reasons["min_lr_ratio"]),
        ("min_lr (steepest)", f"{s.min_lr_steepest:.4g}", s.reasons["min_lr_steepest"]),
        ("plateau", f"{s.plateau[0]:.3g}..{s.plateau[1]:.3g}", s.reasons["plateau"]),
    )
    for name, value, reason in rows:
        print(f"  {name:<18} {value:<14} {reason}")
    if others:
        print(
            "Other rules' max_lr (marked on the plot): "
            + ", ".join(
                f"{name} {o:.3g}" if isinstance(o, float) else f"{name} none"
                for name, o in others.items()
                if name != s.rule
            )
        )


def _budget_source(args: argparse.Namespace, file: dict[str, Any], config: Any) -> str:
    """Where lr-find's budget came from, in words (and how to change it)."""
    from superconv.config import DATASET_DEFAULTS

    if args.budget is not None:
        return "the --budget given"
    if args.epochs is not None:
        return f"{args.epochs:g} epochs (--epochs)"
    if "iterations" in file:
        return f"the iterations of {args.config}"
    change = "--budget N or --epochs E sets another"
    epochs = DATASET_DEFAULTS.get(config.dataset, {}).get("epochs")
    if (args.preset or "auto") == "auto" and epochs is not None:
        return f"{epochs:g} epochs, {config.dataset}'s default budget ({change})"
    return f"TrainConfig's default budget ({change})"


# ----------------------------------------------------------------------------- Next:
# What a Next: command sets itself (the policy and the budget) or derives from its budget
# (the evaluation and checkpoint cadence); model and dataset are always written out.
_NEXT_OWN = ("model", "dataset", "iterations", "eval_every", "checkpoint_every", "policy",
             "policy_params")  # fmt: skip


def next_command(config: Any, max_lr: float, iterations: int, preset: str = "auto") -> str:
    """The ``superconv train`` command of a 1cycle on ``config``'s settings: one function for
    lr-find, fit and the docs.

    It writes the model and data set, then every other TrainConfig field whose value
    differs from what ``train --dataset D --preset P`` resolves by itself
    (:func:`resolve_train_config`): subset, validation size, batch, normalisation,
    flip, crop, optimizer, weight decay, BN settings, precision, seed, device... The
    fields are read from the dataclass, so a new one is carried too. Then the
    budget (``iterations``) and the 1cycle of :data:`superconv.suggest.CYCLE` at
    ``max_lr`` (lr-find gives its suggestion's ``safe_max_lr``).

    >>> from superconv.config import TrainConfig
    >>> c = TrainConfig(model="lenet", dataset="mnist-demo", batch_size=32, flip=False,
    ...                 normalize="unit", val_size=1000)
    >>> next_command(c, 0.05, 300)  # doctest: +NORMALIZE_WHITESPACE
    'superconv train --model lenet --dataset mnist-demo --val-size 1000 --batch-size 32
     --iterations 300 --policy one_cycle --policy-param div=4 --policy-param max_lr=0.05'
    """
    import shlex

    from superconv.config import TrainConfig
    from superconv.suggest import CYCLE

    baseline = resolve_train_config(
        argparse.Namespace(dataset=config.dataset, preset=preset), announce=False
    )
    if config.precision == "auto":  # resolves as the baseline's does: nothing to carry
        config = dataclasses.replace(config, precision=baseline.precision)
    words = ["superconv", "train"] + (["--preset", preset] if preset != "auto" else [])
    words += ["--model", config.model, "--dataset", config.dataset]
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        value = getattr(config, name)
        if name in _NEXT_OWN or value == getattr(baseline, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            words += [flag, "none" if value is None else str(value)]
    words += ["--iterations", str(iterations), "--policy", "one_cycle"]
    for key, value in CYCLE.policy_params(max_lr).items():
        text = f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
        words += ["--policy-param", f"{key}={text}"]
    return shlex.join(words)


def print_next(
    config: Any,
    max_lr: float,
    iterations: int,
    *,
    what: str,
    budget: str,
    seconds_per_step: float | None,
    measured: str,
    preset: str = "auto",
) -> None:
    """Print the ``Next`` lines: what the command trains, its budget and its time (from
    ``seconds_per_step``, measured after the warm-up), then :func:`next_command`."""
    from superconv.timing import format_duration

    if seconds_per_step is None:
        time = "its time not measured (no timed steps past the warm-up)"
    else:
        seconds = seconds_per_step * iterations
        time = (
            f"{'about ' if seconds >= 0.5 else ''}{format_duration(seconds)} at the "
            f"{1000 * seconds_per_step:.3g} ms per step {measured}"
        )
    print(
        f"Next ({what}; a 1cycle of {iterations:,} iterations, {budget}; {time}):\n"
        f"  {next_command(config, max_lr, iterations, preset)}"
    )


# ----------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from superconv.train import train

    if args.resume:
        given = [f"--{n.replace('_', '-')}" for n in _flags_given(args, _config_fields())]
        given += [flag for flag, value in (("--config", args.config), ("--out", args.out)) if value]
        given += _resolution_given(args)
        if given:
            raise UserError(
                f"--resume continues the run exactly as recorded in {args.resume}/config.json; "
                f"drop {', '.join(given)}."
            )
        run_dir = Path(args.resume)
        config = _recorded_config(run_dir)
        _check_early(config)
        _say(f"Resuming {run_dir} ({config.model} on {config.dataset}, policy {config.policy}).")
    else:
        config = resolve_train_config(args, _read_config_file(args))
        _check_early(config)
        run_dir = Path(
            args.out
            or f"runs/{config.model}-{_dataset_tag(config.dataset)}-{config.policy}-seed{config.seed}"
        )
        _say(
            f"Training {config.model} on {config.dataset}: policy {config.policy} "
            f"{json.dumps(dict(config.policy_params))}, {config.iterations:,} iterations at batch "
            f"{config.batch_size} -> {run_dir}"
        )
        _print_settings(args, config)
    result = train(
        config,
        run_dir,
        resume=bool(args.resume),
        progress=args.progress,
        tensorboard=args.tensorboard,
    )
    if _is_main():  # under torchrun, rank 0 alone writes and reports
        _train_plots(config, result.run_dir)
        _print_summary(result.summary, result.run_dir)
    return 0


def _resolution_given(args: argparse.Namespace) -> list[str]:
    """The --preset / --epochs flags given (--resume refuses them: the record decides)."""
    return [f"--{name}" for name in ("preset", "epochs") if getattr(args, name, None) is not None]


def _say(text: str) -> None:
    """Print on rank 0 only (every process of a torchrun job runs the command)."""
    if _is_main():
        print(text)


def _is_main() -> bool:
    from superconv.distributed import world_from_env

    return world_from_env().is_main


def _recorded_config(run_dir: Path) -> Any:
    from superconv.config import TrainConfig
    from superconv.records import RunDir

    run = RunDir(run_dir)
    if not run.config_path.is_file():
        raise RunDirError(
            f"nothing to resume in {run_dir}: it has no config.json. Check the path "
            "(it is the --out folder of the run)."
        )
    try:
        record = run.read_config()
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{run.config_path} is unreadable ({exc}); cannot resume.") from exc
    record.pop("policy_built", None)  # written by train() beside the fields
    config = TrainConfig.from_dict(record)
    cores = os.cpu_count() or 1
    if isinstance(config.threads, int) and config.threads > cores:
        # Threads say where a run runs, not what it is (records.WHERE_KEYS): a run made
        # on a bigger machine resumes here with the cores this one has.
        _say(f"The run used {config.threads} threads; this machine has {cores}: using {cores}.")
        config = config.replace(threads=cores)
    return config


def _train_plots(config: Any, run_dir: Path) -> list[Path]:
    import math

    from superconv.plots import plot_estimates, plot_schedule
    from superconv.records import read_csv
    from superconv.train import make_policy

    files = [
        plot_schedule(
            make_policy(config),
            config.iterations,
            run_dir / "schedule.png",
            title=f"{config.policy} {json.dumps(dict(config.policy_params))}",
        )
    ]
    estimates = run_dir / "estimates.csv"
    if config.estimator_k is not None and estimates.is_file():
        rows = [
            [
                math.nan if r[k] is None else float(r[k])
                for k in ("iteration", "estimate", "smoothed")
            ]
            for r in read_csv(estimates)
        ]
        if rows:
            files.append(
                plot_estimates({f"{config.model} {config.policy}": rows}, run_dir / "estimates.png")
            )
    return files


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{value:.2f}%"

    from superconv.timing import format_duration

    wall = summary.get("wall_time") or 0.0
    iterations = summary.get("iterations", 0)
    pace = summary.get("seconds_per_step")
    after = f", {1000 * pace:.3g} ms per step after the warm-up" if pace else ""
    print(
        f"Finished {iterations:,} iterations in {format_duration(wall)} of training "
        f"({iterations / max(wall, 1e-9):.1f} it/s{after})."
    )
    line = f"  test accuracy {pct(summary.get('final_test_acc'))} (best during the run {pct(summary.get('best_test_acc'))})"
    if summary.get("final_val_acc") is not None:
        line += f", validation accuracy {pct(summary['final_val_acc'])}"
    if summary.get("final_train_loss") is not None:
        line += f", final train loss {summary['final_train_loss']:.4f}"
    print(line)
    names = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    print(f"  run folder {run_dir}: {', '.join(names)}")


# ----------------------------------------------------------------------------- fit
_FIT_OPTIONS = ("config", "preset", "epochs", "tune_budget", "repeats", "range_steps", "start_lr",
                "end_lr", "factors")  # fmt: skip


def _factors(text: str) -> tuple[float, ...]:
    """``--factors 4,2,1,0.5``: positive numbers, largest first (argparse type)."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected positive numbers separated by commas (e.g. 4,2,1,0.5), got {text!r}"
        )
    return tuple(sorted(set(values), reverse=True))


def _cmd_fit(args: argparse.Namespace) -> int:
    from superconv.fit import fit_run

    config, kwargs, out = _resumed_fit(args) if args.resume else _new_fit(args)
    result = fit_run(
        config,
        out,
        resume=bool(args.resume),
        progress=args.progress,
        echo=_say,
        tensorboard=args.tensorboard,
        **kwargs,
    )
    if _is_main():
        _print_fit_result(args, config, result, out)
    return 0


def _resumed_fit(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Path]:
    """``--resume DIR``: the config and fit_run's settings as recorded in DIR/fit.json
    (any other flag refused); and the folder."""
    from superconv.config import TrainConfig
    from superconv.fit import RangePlan

    given = [f"--{n.replace('_', '-')}" for n in _flags_given(args, FIT_FIELDS)]
    given += [f"--{n.replace('_', '-')}" for n in _FIT_OPTIONS if getattr(args, n) is not None]
    given += ["--no-verify"] * (not args.verify) + ["--out"] * bool(args.out)
    if given:
        raise UserError(
            f"--resume continues the fit exactly as recorded in {args.resume}/fit.json; "
            f"drop {', '.join(given)}."
        )
    settings = _recorded_fit(Path(args.resume))
    config = TrainConfig.from_dict(settings["train_config"])
    _say(f"Resuming the fit in {args.resume}.")
    kwargs = {k: settings[k] for k in ("epochs", "tune_budget", "verify", "repeats", "range_steps")}
    kwargs["range_plan"] = RangePlan(**settings["range_plan"])
    kwargs["factors"] = tuple(settings["factors"])
    kwargs["evaluations"] = settings["evaluations"]
    return config, kwargs, Path(args.resume)


def _new_fit(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Path]:
    """A new fit: the config resolved from the flags, fit_run's settings; and the folder."""
    from superconv.fit import RangePlan

    file = _read_config_file(args)
    config = resolve_train_config(args, file, _validation_default(args, file), FIT_FIELDS)
    _check_early(config.replace(policy="one_cycle", policy_params={"max_lr": 0.1}))
    _print_settings(args, config, "the 1cycle this fit chooses (range test -> check)")
    plan = RangePlan.for_optimizer(config.optimizer)
    plan = RangePlan(
        start_lr=plan.start_lr if args.start_lr is None else args.start_lr,
        end_lr=plan.end_lr if args.end_lr is None else args.end_lr,
        mode=plan.mode,
    )
    from superconv.range_test import check_range_test_args

    check_range_test_args(start_lr=plan.start_lr, end_lr=plan.end_lr, mode=plan.mode)
    kwargs = {
        "epochs": args.epochs,
        "tune_budget": 1.0 if args.tune_budget is None else args.tune_budget,
        "verify": args.verify,
        "repeats": 1 if args.repeats is None else args.repeats,
        "range_steps": args.range_steps,
        "range_plan": plan,
        **({"factors": args.factors} if args.factors else {}),
        # the user's --eval-every / --checkpoint-every, else 10 evaluations (and checkpoints)
        "evaluations": None if "eval_every" in {**file, **vars(args)} else 10,
    }
    return config, kwargs, Path(args.out or f"fits/{config.model}-{_dataset_tag(config.dataset)}")


def _print_fit_result(args: argparse.Namespace, config: Any, result: Any, out: Path) -> None:
    """The chosen cycle and its verdict, the notices, the final accuracy, and the Next: command."""
    v = result.record["verdict"]
    s = result.summary
    print(
        f"Chosen: 1cycle max_lr {result.max_lr:.4g} (div {result.policy_params['div']}), "
        f"{result.budget.iterations} iterations. Verdict: {v['verdict']}"
        + (f" ({v['check']})" if "check" in v else "")
        + (f"; {v['trained']}" if "trained" in v else "")
        + (f", spread {v['spread']:.2f}x over {v['seeds']} seeds" if v.get("spread") else "")
        + "."
    )
    for note in result.record["notes"]:
        print(f"Notice: {note}.")
    if s.get("final_test_acc") is not None:
        print(
            f"Final test accuracy {s['final_test_acc']:.2f}% (validation "
            f"{s['final_val_acc']:.2f}%)."
        )
    print(f"Report: {result.files['markdown']}; run folder {out / s['run']}.")
    # The cycle this fit trained (checked by its own run at this budget), for longer.
    longer = 2 * result.budget.iterations
    print_next(
        config,
        result.max_lr,
        longer,
        what=f"the 1cycle this fit trained, max_lr {result.max_lr:.4g}, for longer",
        budget="twice this fit's budget (--iterations N or --epochs E sets another)",
        seconds_per_step=s.get("seconds_per_step"),
        measured="measured in this fit's training run after its warm-up",
        preset=args.preset or "auto",
    )


def _recorded_fit(folder: Path) -> dict[str, Any]:
    path = folder / "fit.json"
    if not path.is_file():
        raise RunDirError(f"nothing to resume in {folder}: it has no fit.json. Check the path.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); cannot resume.") from exc


# ----------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from superconv.demo import demo

    demo(
        args.out,
        quick=args.quick,
        seeds=args.seeds,
        device=args.device,
        threads=args.threads,
        progress=args.progress,
    )
    return 0


# ----------------------------------------------------------------------------- data
def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from superconv.data import DataError, load_dataset, locate_data_dir
    from superconv.fetch import fetch

    root = locate_data_dir(args.data_dir)
    if args.check:
        try:
            ds = load_dataset(args.name, args.data_dir)
        except DataError:
            pass  # not there (or damaged): download it
        else:
            print(
                f"{args.name} is already present and valid in {root} ({_sizes(ds)}); nothing to do."
            )
            return 0
    print(f"Fetching {args.name} into {root}")
    fetch(args.name, args.data_dir, url_base=args.url_base, progress=args.progress)
    if args.check:
        ds = load_dataset(args.name, args.data_dir)
        print(f"{args.name}: ok ({_sizes(ds)}) in {root}")
    else:
        print(f"{args.name}: downloaded into {root} (not checked: --no-check)")
    return 0


def _sizes(ds: Any) -> str:
    return f"{len(ds.train_y):,} training / {len(ds.test_y):,} test images"


def _cmd_data_check(args: argparse.Namespace) -> int:
    from superconv.data import DATASETS, ENV_VAR, DataError, load_dataset, locate_data_dir

    root = locate_data_dir(args.data_dir)
    source = (
        "--data-dir" if args.data_dir else (f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "default")
    )
    if root.exists() and not root.is_dir():
        raise UserError(f"the data folder {root} ({source}) is a file, not a folder.")
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise UserError(f"the data folder {root} ({source}) is not readable.")
    note = "" if root.is_dir() else " (does not exist yet)"
    print(f"Data folder: {root} ({source}){note}")
    print(f"{'data set':<15} {'status':<8} details")
    for name in DATASETS:
        try:
            ds = load_dataset(name, args.data_dir, verify=True)
        except DataError as exc:
            status = "missing" if "not found" in str(exc) else "invalid"
            print(f"{name:<15} {status:<8} " + _indent(str(exc), 24))
        else:
            where = "in the package" if name == "mnist-demo" else "checksums verified where known"
            print(f"{name:<15} {'ok':<8} {_sizes(ds)}; {where}")
    return 0


def _indent(text: str, width: int) -> str:
    lines = textwrap.wrap(text, 100 - width)
    return ("\n" + " " * width).join(lines)


# ----------------------------------------------------------------------------- experiments
def _cmd_reproduce(args: argparse.Namespace) -> int:
    from superconv import paper, runner

    if args.list:
        registry = paper.EXPERIMENTS
        w_id = max(len(e.id) for e in registry.values())
        w_item = max(len(e.paper_item) for e in registry.values())
        print(f"{'experiment':<{w_id}}  {'paper item':<{w_item}}  title")
        for exp in registry.values():
            print(f"{exp.id:<{w_id}}  {exp.paper_item:<{w_item}}  {exp.title}")
        print("`superconv reproduce EXPERIMENT --dry-run` lists its runs and the expected time.")
        return 0
    if not args.experiment:
        raise UserError("name an experiment (superconv reproduce --list shows them).")
    experiment = paper.get_experiment(args.experiment)  # unknown ids: a did-you-mean
    paths = runner.reproduce(
        experiment,
        seeds=args.seeds,
        scale=args.scale,
        out=args.out,
        data_dir=args.data_dir,
        device=args.device,
        dry_run=args.dry_run,
        progress=args.progress,
        threads=args.threads,
        only=args.only,
    )
    if not args.dry_run:
        print(f"{len(paths)} run folder(s) under {args.out}.")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from superconv.report import is_run_folder, update_readme, write_index, write_report

    folders = [Path(p) for p in args.results]
    if any(is_run_folder(p) for p in folders) or len(folders) > 1:
        if args.readme:
            raise UserError("--readme reads a results folder, not run folders.")
        return _report_runs(folders, args.out)
    root = folders[0]
    if not root.is_dir():
        raise UserError(
            f"no results folder at {root}: run `superconv reproduce EXPERIMENT` first, "
            "or name the folder it wrote."
        )
    folders = report_folders(root)
    if args.out and len(folders) > 1:
        raise UserError(
            f"{root} holds {len(folders)} experiments; --out needs one: name its folder "
            f"(e.g. {folders[0]})."
        )
    for folder in folders:
        print(f"Wrote {write_report(folder, out=args.out)}")
    if folders != [root] and not args.out:  # a folder of experiments: the index too
        print(f"Wrote {write_index(root, folders)}")
    if args.readme:
        print(f"Updated {update_readme(args.readme, folders)}")
    return 0


def _report_runs(folders: Sequence[Path], out: str | None) -> int:
    """``report RUN [RUN...]``: one run's summary; several runs compared, curves overlaid."""
    from superconv.report import compare_runs_table, read_any_run, run_summary_text

    missing = [str(p) for p in folders if not p.is_dir()]
    if missing:
        raise UserError(f"no such folder: {', '.join(missing)}.")
    views = [read_any_run(p) for p in folders]
    for view in views:
        print(run_summary_text(view))
    if len(views) == 1:
        return 0
    print()
    print(compare_runs_table(views))
    with_rows = {str(v.path): v.metrics for v in views if v.metrics}
    if with_rows:
        from superconv.plots import plot_run_curves

        path = Path(out or "compare.png")
        print(f"Wrote {plot_run_curves(with_rows, path, title='runs compared')}")
    return 0


def report_folders(root: Path) -> list[Path]:
    """The folders of run directories (``<row>/seed<k>/``) at or under ``root``.

    ``reproduce`` writes ``results/<experiment>/<scale>/<row>/seed<k>/``, so
    ``superconv report results`` reports every experiment found there.
    """
    found = {p.parent.parent.parent for p in root.glob("**/seed*/config.json")}
    # and every folder reproduce has started (its manifest), so that the set does not
    # depend on which runs happen to be on disk (say, still going, not yet committed)
    found |= {p.parent for p in root.glob("**/manifest.json")}
    return sorted(found) or [root]  # none: write_report says what it expected


if __name__ == "__main__":
    sys.exit(main())
