"""Draw the schedules of current practice for docs/integrations.md (docs/img/schedule_*.png).

Each is a 10,000-step run at max_lr 0.1 (the shapes matter, not the numbers).

Usage::

    PYTHONPATH=src python tools/plot_practice_schedules.py
"""

from __future__ import annotations

from pathlib import Path

from superconv.plots import plot_schedule
from superconv.schedules import (
    WSD,
    InverseSqrt,
    LinearDecay,
    Polynomial,
    WarmupCosine,
    build_policy,
)
from superconv.suggest import CYCLE

TOTAL = 10_000
MAX_LR = 0.1
OUT = Path(__file__).resolve().parents[1] / "docs" / "img"

SCHEDULES = {
    "one_cycle": (build_policy("one_cycle", TOTAL, **CYCLE.policy_params(MAX_LR)), "1cycle (suggest.CYCLE) with cyclical momentum"),
    "linear_decay": ({"lr": LinearDecay(MAX_LR, TOTAL, warmup_steps=500)}, "LinearDecay, 500 warm-up steps"),
    "poly": ({"lr": Polynomial(MAX_LR, TOTAL, power=0.9)}, "Polynomial, power 0.9 (torch PolynomialLR)"),
    "inv_sqrt": ({"lr": InverseSqrt(MAX_LR, warmup_steps=1000)}, "InverseSqrt, 1,000 warm-up steps"),
    "wsd": ({"lr": WSD(MAX_LR, TOTAL, warmup_steps=500, decay_steps=2000)}, "WSD: 500 warm-up, 1-sqrt decay over the last 2,000"),
    "warmup_cosine": ({"lr": WarmupCosine(MAX_LR, TOTAL, warmup_steps=500, min_lr=0.01)}, "WarmupCosine, 500 warm-up steps, floor 0.01"),
}  # fmt: skip


def main() -> None:
    for name, (policy, title) in SCHEDULES.items():
        print(plot_schedule(policy, TOTAL, OUT / f"schedule_{name}.png", title=title))


if __name__ == "__main__":
    main()
