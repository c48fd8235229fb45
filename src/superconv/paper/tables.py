"""The paper's tables as plans: Table 1 (CLR range, BN MAF and run length, limited
data), Table 5 (batch size and dropout) and Table 6 (momentum and weight decay).

Each row is a :class:`~superconv.plan.Train` with the paper's number and the
authors' log beside it (:class:`~superconv.plan.Reference`).
"""

from __future__ import annotations

from superconv.paper.scales import Scale, clr_run, pc_run
from superconv.plan import Plan, Reference, Step, Train


def table1_clr_range(s: Scale) -> Plan:
    # Table 1, rows 1-6: CLR (0.1-max) at BN MAF 0.95, 10,000 iterations, 50,000 images.
    rows = (
        (3.5, Reference(92.1, None, "Table 1")),
        (3.0, Reference(92.4, 92.44, "Table 1; log: REFERENCE.md 'CLR 0.1-3 10k: 92.44'")),
        (2.5, Reference(92.3, None, "Table 1")),
        (2.0, Reference(91.7, None, "Table 1")),
        (1.5, Reference(90.9, None, "Table 1")),
        (1.0, Reference(91.3, None, "Table 1")),
    )
    steps = tuple(Train(f"clr-0.1-{m:g}", clr_run(s, max_lr=m), ref) for m, ref in rows)
    return Plan(s.name, steps, s.notes)


def table1_maf(s: Scale) -> Plan:
    # Table 1, rows 7-12: CLR 0.1-3 with BN MAF / total iterations varied together (Fig. 1b).
    rows = (
        (0.97, 20_000, Reference(92.7, None, "Table 1")),
        (0.95, 10_000, Reference(92.4, 92.44, "Table 1; log: REFERENCE.md 'CLR 0.1-3 10k: 92.44'")),
        (0.93, 8_000, Reference(91.7, None, "Table 1")),
        (0.90, 6_000, Reference(92.1, None, "Table 1")),
        (0.85, 4_000, Reference(91.1, None, "Table 1")),
        (0.80, 2_000, Reference(89.7, None, "Table 1")),
    )
    steps = tuple(
        Train(f"maf{maf:g}-{n // 1000}k", clr_run(s, paper_iterations=n, bn_maf=maf), ref)
        for maf, n, ref in rows
    )
    # Section 6.1: Caffe's default MAF 0.999 "is only appropriate for the typical, very long
    # training times"; with it (or use_global_stats) short runs do not super-converge.
    steps += (
        Train(
            "maf0.999-10k",
            clr_run(s, bn_maf=0.999),
            note="paper (section 6.1, no number): MAF 0.999 prevents super-convergence in short runs",
        ),
    )
    notes = s.notes + (
        "Each row keeps the paper's MAF and its share of the paper's length; maf0.999-10k "
        "contrasts Caffe's default MAF with 0.95 at the 10k-iteration length.",
    )
    return Plan(s.name, steps, notes)


def table1_limited(s: Scale) -> Plan:
    # Table 1, rows 13-20 and Fig. 6a: class-balanced subsets of the training set.
    # Paper (Table 1) PC-LR vs CLR; logs: REFERENCE.md "Limited data CLR 91.10/89.64/87.92/80.59
    # vs PC 90.43/86.36/62.33/71.20" (40k/30k/20k/10k).
    rows = (
        (40_000, (89.1, 90.43), (91.1, 91.10)),
        (30_000, (85.7, 86.36), (89.6, 89.64)),
        (20_000, (82.7, 62.33), (87.9, 87.92)),
        (10_000, (71.4, 71.20), (80.6, 80.59)),
    )
    src = "Table 1; log: REFERENCE.md authors' logs (limited data)"
    steps: list[Step] = []
    for n, pc, clr in rows:
        steps.append(Train(f"pc-{n // 1000}k", pc_run(s, train_subset=n), Reference(*pc, src)))
        steps.append(Train(f"clr-{n // 1000}k", clr_run(s, train_subset=n), Reference(*clr, src)))
    notes = s.notes + (
        "The subsets are class-balanced and fixed across seeds and policies (split_seed 0). "
        "Full-data rows are in fig1.",
    )
    return Plan(s.name, tuple(steps), notes)


def table5(s: Scale) -> Plan:
    # Table 5 / Fig. 9a: total batch size with CLR 0.1-3, stepsize 5,000 (10k iterations);
    # Fig. 9b: dropout 0.2 "a small improvement" (no number given).
    rows = ((1536, 92.1), (1000, 92.4), (512, 91.7), (256, 89.5))
    steps: list[Step] = []
    for batch, acc in rows:
        if s.name == "full":
            changes = {"batch_size": batch, "ghost_batch": batch // 8}  # 8 GPUs, unsynchronised BN
        else:  # one device holding one GPU's share: batch / 8 (1000 -> the base 128)
            changes = {"batch_size": s.base.batch_size if batch == 1000 else batch // 8}
        steps.append(Train(f"batch{batch}", clr_run(s, **changes), Reference(acc, None, "Table 5")))
    steps.append(
        Train(
            "dropout0.2",
            clr_run(s, dropout=0.2),
            note="paper (Fig. 9b): a small gain over batch1000",
        )
    )
    notes = s.notes + (
        "Ghost batches = batch / 8 at full scale (the paper's 8 GPUs); at reduced and small "
        "scales each batch is divided by 8 (one GPU's share: 192 / 128 / 64 / 32) on one device."
        if s.name != "full"
        else "Ghost batches = batch / 8 (the paper's 8 GPUs with unsynchronised BN).",
    )
    return Plan(s.name, tuple(steps), notes)


def table6(s: Scale) -> Plan:
    # Table 6 / Fig. 10a: momentum; Fig. 10b: weight decay (1e-4 works, 1e-3 does not).
    # Logs (REFERENCE.md): momentum 0.8/0.85/0.9/0.95: 91.86/92.29/92.44/90.74.
    src = "Table 6; log: REFERENCE.md authors' logs"
    steps: list[Step] = [
        Train(
            f"momentum{m:g}",
            clr_run(s, momentum=m),
            Reference(acc, log, src),
            note="also the weight decay 1e-4 row of Fig. 10b" if m == 0.9 else "",
        )
        for m, acc, log in (
            (0.80, 92.1, 91.86),
            (0.85, 91.9, 92.29),
            (0.90, 92.4, 92.44),
            (0.95, 90.7, 90.74),
        )
    ]
    for wd in (1e-3, 1e-5, 1e-6):
        note = (
            "paper: prevents super-convergence"
            if wd == 1e-3
            else "paper: super-converges, below 1e-4"
        )
        steps.append(Train(f"wd{wd:g}", clr_run(s, weight_decay=wd), note=note))
    notes = s.notes + ("Weight decay 1e-4 is the momentum0.9 row (the same run).",)
    return Plan(s.name, tuple(steps), notes)
