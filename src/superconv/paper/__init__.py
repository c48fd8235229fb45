"""The paper's tables and figures, and the project's own experiments, as a catalogue.

Every entry is one :class:`~superconv.plan.Experiment` (Smith & Topin 2017, arXiv
1708.07120v1, plus the follow-up MNIST claim, the skeptic's fair comparison and the
suggestion benchmark) whose ``plan(scale)`` gives the ordered steps to run at the
scale (``small``, ``reduced`` or ``full``: :mod:`superconv.paper.scales`). The
plans live by group: :mod:`~superconv.paper.tables`, :mod:`~superconv.paper.figures`,
:mod:`~superconv.paper.followup` and :mod:`~superconv.paper.project`. They are data:
:func:`superconv.runner.reproduce` runs them and :mod:`superconv.report` reads what
they left.

>>> exp = get_experiment("table1-clr-range")
>>> [step.name for step in exp.plan("full").steps][:2]
['clr-0.1-3.5', 'clr-0.1-3']

The registry is built on demand by :func:`experiments` (no work at import
time); ``EXPERIMENTS`` is the same read-only mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from superconv.errors import UserError, did_you_mean
from superconv.paper import figures, followup, project, tables
from superconv.paper.scales import SCALES, scaled
from superconv.plan import Experiment

__all__ = ["EXPERIMENTS", "SCALES", "experiment_ids", "experiments", "get_experiment"]


def _entries() -> tuple[Experiment, ...]:
    # long: the catalogue itself, one entry per experiment in the paper's order (long,
    # as a table is; each plan lives in its group's module).
    return (
        Experiment(
            "table1-clr-range",
            "Table 1: CLR range (ResNet-56, CIFAR-10)",
            "Table 1, rows 1-6",
            "max_lr of 1 is too small; about 3 works best (CLR 0.1-3: 92.4%).",
            scaled(tables.table1_clr_range),
        ),
        Experiment(
            "table1-maf",
            "Table 1: BN moving-average fraction and run length",
            "Table 1, rows 7-12; Fig. 1b",
            "Shorter CLR runs need a smaller BN MAF; 2k-20k iterations give 89.7-92.7%.",
            scaled(tables.table1_maf),
        ),
        Experiment(
            "table1-limited-data",
            "Table 1 / Fig. 6a: limited training data",
            "Table 1, rows 13-20; Fig. 6a",
            "CLR's gain over PC-LR grows as the training set shrinks (10k images: 80.6% vs 71.4%).",
            scaled(tables.table1_limited),
        ),
        Experiment(
            "fig1",
            "Fig. 1a: super-convergence vs piecewise-constant LR",
            "Fig. 1a, section 1",
            "CLR 0.1-3 reaches 92.4% in 10k iterations; PC-LR 91.2% after 80k.",
            scaled(figures.fig1),
        ),
        Experiment(
            "fig2b",
            "Fig. 2b: LR range test to 3.0",
            "Fig. 2b, section 3",
            "Test accuracy stays high up to LR 3.0 for 5k, 20k and 100k-iteration tests.",
            scaled(figures.fig2b),
        ),
        Experiment(
            "fig4",
            "Fig. 4: train vs test loss in the range test",
            "Fig. 4a/4b, section 4",
            "Train loss rises while test loss falls from LR ~0.2 to 2.0: large LRs regularize.",
            scaled(figures.fig4),
        ),
        Experiment(
            "fig5a",
            "Fig. 5a: eq. 8 LR estimate, every iteration",
            "Fig. 5a, section 5",
            "The estimated optimal LR is 2-4 early in training.",
            scaled(figures.fig5(1, 300)),
        ),
        Experiment(
            "fig5b",
            "Fig. 5b: eq. 8 LR estimate, every 10 iterations",
            "Fig. 5b, section 5",
            "Constant LR 0.1: the estimate falls near 0.2; CLR: it stays high, ending near 0.5.",
            scaled(figures.fig5(10, None)),
        ),
        Experiment(
            "fig6",
            "Fig. 6b: ResNet-20 and ResNet-110",
            "Fig. 6b, section 6.1",
            "CLR beats PC-LR for shallow and deep ResNets (R-20 90.4 vs 88.6; R-110 92.1 vs 91.0).",
            scaled(figures.fig6),
        ),
        Experiment(
            "fig7",
            "Fig. 7: CIFAR-100",
            "Fig. 7a/7b, A.2",
            "Super-convergence on CIFAR-100: CLR 68.6% vs PC-LR 59.8%.",
            scaled(figures.fig7),
        ),
        Experiment(
            "fig8",
            "Fig. 8: adaptive optimizers with and without CLR",
            "Fig. 8a/8b, A.2",
            "Nesterov, AdaDelta, AdaGrad super-converge with CLR; Adam does not.",
            scaled(figures.fig8),
        ),
        Experiment(
            "table5",
            "Table 5 / Fig. 9: batch size and dropout",
            "Table 5; Fig. 9a/9b, A.2",
            "Larger total batches do better with CLR (1536: 92.1% .. 256: 89.5%); dropout 0.2 helps a little.",
            scaled(tables.table5),
        ),
        Experiment(
            "table6",
            "Table 6 / Fig. 10: momentum and weight decay",
            "Table 6; Fig. 10a/10b, A.2",
            "Momentum 0.9 is best (92.4%); weight decay 1e-4 works, 1e-3 prevents super-convergence.",
            scaled(tables.table6),
        ),
        Experiment(
            "fig11",
            "Fig. 11: range tests without super-convergence",
            "Fig. 11a/11b, section 6.2",
            "Bottleneck ResNet, ResNeXt and DenseNet peak near LR 0.1-0.15 and swing beyond it.",
            scaled(figures.fig11),
        ),
        Experiment(
            "mnist-lenet",
            "MNIST LeNet: 1cycle vs Caffe's reference solver",
            "follow-up practice notes (LeNet on MNIST)",
            "1cycle reaches ~99.3% in 12 epochs; the preset inv solver 99.03% after 85 epochs.",
            scaled(followup.mnist),
        ),
        Experiment(
            "fair-comparison",
            "Fair comparison: 1cycle vs tuned baselines at equal budgets",
            "the skeptic's critique: tuned baselines at equal budget",
            "Does 1cycle beat a tuned multistep / warm-up cosine baseline at the same iteration budget?",
            scaled(project.fair_comparison),
        ),
        Experiment(
            "suggest",
            "Suggestion benchmark: range-test rules scored against 1cycle max_lr sweeps",
            "the LR range test's reading (section 3), scored",
            "A range-test rule's max_lr is within 2x of the swept best and loses at most "
            "max(1 point, 2 SE) of validation accuracy, on every task.",
            scaled(project.suggestion_benchmark),
        ),
    )


def experiments() -> Mapping[str, Experiment]:
    """The registry: experiment id -> :class:`Experiment` (a read-only mapping, built on call)."""
    return MappingProxyType({e.id: e for e in _entries()})


def __getattr__(name: str) -> Any:
    # EXPERIMENTS is built on first access (PEP 562), not at import time.
    if name == "EXPERIMENTS":
        return experiments()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def experiment_ids() -> tuple[str, ...]:
    """The ids of every registered experiment, in the paper's order."""
    return tuple(experiments())


def get_experiment(exp_id: str) -> Experiment:
    """The experiment ``exp_id``; :class:`UserError` with a did-you-mean if unknown."""
    registry = experiments()
    if exp_id not in registry:
        parts = [i for i in registry if i.startswith(f"{exp_id}-")]
        if parts:  # e.g. "table1": the paper's Table 1 is split into three experiments
            hint = f"; it is split into {', '.join(repr(p) for p in parts)}."
        else:
            hint = did_you_mean(exp_id, registry) or "."
        raise UserError(
            f"unknown experiment {exp_id!r}{hint} Known: {', '.join(registry)} "
            "(superconv reproduce --list shows them)."
        )
    return registry[exp_id]
