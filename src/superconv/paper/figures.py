"""The paper's figures as plans: Fig. 1a (super-convergence vs PC-LR), 2b and 4 (range
tests), 5 (the eq. 8 LR estimate), 6b (ResNet depth), 7 (CIFAR-100), 8 (adaptive
optimizers) and 11 (range tests without super-convergence).
"""

from __future__ import annotations

from collections.abc import Callable

from superconv.paper.scales import (
    RANGE_TEST_NOTES,
    Scale,
    clr_run,
    pc_run,
    range_lengths,
    range_test_step,
)
from superconv.plan import NO_REFERENCE, Plan, Reference, Step, Train


def fig1(s: Scale) -> Plan:
    # Fig. 1a / section 1: PC reaches 91.2% after ~80k iterations, CLR 92.4% after 10k.
    steps = (
        Train(
            "clr-0.1-3",
            clr_run(s),
            Reference(92.4, 92.44, "Table 1 / section 1; log: REFERENCE.md 'CLR 0.1-3 10k'"),
        ),
        Train(
            "pc-0.35",
            pc_run(s),
            Reference(
                91.2, 90.32, "section 1 ('91.2% after ~80,000 iterations'); log: REFERENCE.md"
            ),
        ),
    )
    return Plan(s.name, steps, s.notes)


def fig2b(s: Scale) -> Plan:
    # Fig. 2b: range tests 0 -> 3.0 of 5k, 20k and 100k iterations; TEST accuracy vs LR.
    steps = tuple(
        range_test_step(
            s,
            f"range-{n}it",
            n,
            "paper: test accuracy stays high up to LR 3.0 (a long plateau: super-convergence potential)",
        )
        for n in range_lengths(s, (5_000, 20_000, 100_000))
    )
    notes = s.notes + (
        RANGE_TEST_NOTES[s.name],
        "Evaluated on the TEST set, as Fig. 2b plots test accuracy; nothing is tuned on it.",
    )
    return Plan(s.name, steps, notes)


def fig4(s: Scale) -> Plan:
    # Fig. 4a (ResNet-56) and 4b (ResNet-20, ResNet-110): train vs test loss in the range test.
    # The paper does not state the tests' length: 20k iterations here (the middle of Fig. 2b).
    (length,) = range_lengths(s, (20_000,))
    note = "paper: train loss rises while test loss falls for LR ~0.2 to 2.0 (regularization)"
    steps = tuple(
        range_test_step(s, f"range-resnet{d}", length, note, model=s.model(d))
        for d in (56, 20, 110)
    )
    notes = s.notes + (
        RANGE_TEST_NOTES[s.name],
        "The paper does not give Fig. 4's test length; we use 20k iterations at full scale.",
        "Evaluated on the TEST set (the paper plots test loss).",
    )
    return Plan(s.name, steps, notes)


def fig5(k: int, window: int | None) -> Callable[[Scale], Plan]:
    # Section 5, Fig. 5: eq. 8 estimates for constant LR 0.1 vs CLR 0.1-3 (stepsize 5,000).
    def build(s: Scale) -> Plan:
        constant = s.config(policy="constant", policy_params={"lr": 0.1}, estimator_k=k)
        steps = (
            Train(
                "constant-0.1",
                constant,
                note="paper: estimate spikes to ~3, then drops near 0.2"
                if k > 1
                else "paper: estimate in the range 2..4 over the first 300 iterations",
            ),
            Train(
                "clr-0.1-3",
                clr_run(s, estimator_k=k),
                note="paper: estimate stays high, ends near 0.5"
                if k > 1
                else "paper: estimate in the range 2..4 over the first 300 iterations",
            ),
        )
        shown = window if s.name != "small" else None  # a small run is shorter than the window
        span = f"the first {shown} iterations" if shown else "the whole run"
        notes = s.notes + (
            f"Eq. 8 estimate (l1 sums, moving average beta 0.1) from the weights every {k} "
            f"iteration(s) (k={k}) of a full CLR-length run; the figure shows {span}, as the "
            f"paper's Fig. 5{'a' if k == 1 else 'b'} does.",
        )
        return Plan(s.name, steps, notes, estimates_window=shown)

    return build


def fig6(s: Scale) -> Plan:
    # Fig. 6b / section 6.1: ResNet-20 and ResNet-110, PC-LR 0.35 vs CLR with stepsize 10,000
    # (20,000 iterations). Paper: ResNet-20 CLR 90.4 vs PC 88.6; ResNet-110 92.1 vs 91.0.
    # Logs (REFERENCE.md): ResNet-20 90.42 / 88.64; ResNet-110 92.37 / 91.21.
    src = "section 6.1; log: REFERENCE.md authors' logs"
    steps: list[Step] = []
    for depth, clr, pc in ((20, (90.4, 90.42), (88.6, 88.64)), (110, (92.1, 92.37), (91.0, 91.21))):
        model = s.model(depth)  # rows keep the paper's name; config.model is this scale's
        steps.append(
            Train(
                f"clr-resnet{depth}",
                clr_run(s, paper_iterations=20_000, model=model),
                Reference(*clr, src),
            )
        )
        steps.append(Train(f"pc-resnet{depth}", pc_run(s, model=model), Reference(*pc, src)))
    notes = s.notes + (
        "CLR stepsize 10,000 (20,000 iterations) as section 6.1 states; the paper does not give "
        "these runs' BN MAF: 0.95 as Tables 2-3. Limited data (Fig. 6a) is table1-limited-data.",
    )
    return Plan(s.name, tuple(steps), notes)


def fig7(s: Scale) -> Plan:
    # Fig. 7 / A.2: CIFAR-100, ResNet-56. 7a range test 0 -> 3; 7b CLR 68.6% vs PC 59.8%
    # (logs: 68.2 / 59.27, REFERENCE.md).
    (length,) = range_lengths(s, (5_000,))
    src = "A.2; log: REFERENCE.md authors' logs"
    steps = (
        range_test_step(
            s,
            f"range-{length}it",
            length,
            "paper: accuracy stays high from 0 to 3 (super-convergence potential)",
            dataset="cifar100",
        ),
        Train("clr-0.1-3", clr_run(s, dataset="cifar100"), Reference(68.6, 68.2, src)),
        Train("pc-0.35", pc_run(s, dataset="cifar100"), Reference(59.8, 59.27, src)),
    )
    notes = s.notes + (
        RANGE_TEST_NOTES[s.name],
        "Needs the CIFAR-100 data. The paper does not give the range test's length or the "
        "CIFAR-100 iteration counts: 5k for the test, 10k CLR and 80k PC-LR as for CIFAR-10.",
    )
    return Plan(s.name, steps, notes)


def fig8(s: Scale) -> Plan:
    # Fig. 8 / A.2: adaptive methods without CLR (PC regime, 8a) and with CLR (8b).
    # Paper A.2: Nesterov CLR 92.1% after 10k vs PC 90.9% (early stopping at 65k);
    # logs (REFERENCE.md): Nesterov + CLR 92.47, Adam + CLR 87.15.
    # The paper gives no LR bounds for AdaDelta, AdaGrad and Adam: ours are noted per row.
    rows = (
        (
            "nesterov",
            0.35,
            (0.1, 3.0),
            Reference(90.9, None, "A.2 (early stopping at 65k)"),
            Reference(92.1, 92.47, "A.2; log: REFERENCE.md"),
        ),
        ("adadelta", 1.0, (0.1, 3.0), NO_REFERENCE, NO_REFERENCE),
        ("adagrad", 0.01, (0.003, 0.1), NO_REFERENCE, NO_REFERENCE),
        ("adam", 0.001, (0.0003, 0.01), NO_REFERENCE, Reference(None, 87.15, "log: REFERENCE.md")),
    )
    steps: list[Step] = []
    for opt, pc_lr, (lo, hi), pc_ref, clr_ref in rows:
        ours = "" if opt == "nesterov" else " (LRs our choice: the paper gives none)"
        steps.append(
            Train(
                f"pc-{opt}",
                pc_run(s, lr=pc_lr, optimizer=opt),
                pc_ref,
                note=f"PC-LR {pc_lr:g}{ours}",
            )
        )
        steps.append(
            Train(
                f"clr-{opt}",
                clr_run(s, lo, hi, optimizer=opt),
                clr_ref,
                note=f"CLR {lo:g}-{hi:g}{ours}",
            )
        )
    notes = s.notes + (
        "Paper: Nesterov, AdaDelta and AdaGrad super-converge with CLR; Adam does not; none of "
        "them speeds up training without CLR. PC rows use MAF 0.999, CLR rows 0.95.",
        "AdaDelta/AdaGrad have no momentum; Adam's beta1 is the config's momentum (0.9).",
    )
    return Plan(s.name, tuple(steps), notes)


def fig11(s: Scale) -> Plan:
    # Fig. 11 / section 6.2: range tests of architectures without super-convergence.
    # The paper does not state the tests' length: 5k iterations (the shortest of Fig. 2b).
    (length,) = range_lengths(s, (5_000,))
    notes_by_model = {
        "bottleneck56": "paper (Fig. 11a): a peak near LR 0.15, large swings beyond 0.1",
        "resnext": "paper (Fig. 11b): a peak, then swings and decay beyond LR ~0.1",
        "densenet": "paper (section 6.2): no super-convergence",
    }
    steps = tuple(
        range_test_step(s, f"range-{m}", length, note, model=m)
        for m, note in notes_by_model.items()
    )
    notes = s.notes + (
        RANGE_TEST_NOTES[s.name],
        "The paper does not give these tests' length: 5k iterations at full scale. Evaluated on "
        "the TEST set, as the paper's Fig. 2b; the models are the section 6.2 variants at their "
        "own depth at every scale.",
    )
    return Plan(s.name, steps, notes)
