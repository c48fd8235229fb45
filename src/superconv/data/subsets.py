"""Class-balanced subsets and validation splits, as index tensors, seeded.

Table 1 of the paper trains on 40k / 30k / 20k / 10k of CIFAR-10's 50k training
images; :func:`balanced_subset` draws such subsets with the same number of
images per class. Tuning (the LR range test, baselines) must not look at the
test set, so :func:`train_val_split` holds out a class-balanced validation set
from the training images.

Both are pure functions of (labels, size, seed): the same call gives the same
indices on any machine, and the indices come back sorted (original order).
"""

from __future__ import annotations

import torch


def balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` samples, ``n / num_classes`` of each class, drawn with ``seed``.

    Classes are the distinct values in ``labels``. Returns a sorted int64
    tensor. Example::

        >>> y = torch.tensor([0, 1] * 50)
        >>> idx = balanced_subset(y, 10, seed=0)
        >>> torch.bincount(y[idx]).tolist()
        [5, 5]
    """
    labels = torch.as_tensor(labels).reshape(-1)
    classes = torch.unique(labels)  # sorted, so the draw order is fixed
    k = len(classes)
    if k == 0:
        raise ValueError("balanced_subset: labels are empty")
    if n < 0 or n % k:
        lower, upper = n // k * k, (n // k + 1) * k
        raise ValueError(
            f"balanced_subset: n={n:,} is not a non-negative multiple of the {k} classes; "
            f"a class-balanced subset needs n = {k} x (images per class), e.g. {lower:,} or {upper:,}"
        )
    per_class = n // k
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes.tolist():
        members = torch.nonzero(labels == c).reshape(-1)
        if len(members) < per_class:
            raise ValueError(
                f"balanced_subset: class {c} has {len(members):,} samples, fewer than the "
                f"{per_class:,} per class that n={n:,} needs; choose n <= {k} x "
                f"{int(torch.bincount(labels - labels.min()).min()):,}"
            )
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:per_class]])
    return torch.sort(torch.cat(chosen)).values


def train_val_split(
    labels: torch.Tensor, n_val: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into (train, validation); validation is class-balanced.

    ``n_val`` samples (``n_val / num_classes`` per class, drawn with ``seed``)
    go to validation, all others to training. Both index tensors are sorted
    and disjoint, and together cover every sample.
    """
    labels = torch.as_tensor(labels).reshape(-1)
    val_idx = balanced_subset(labels, n_val, seed)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep).reshape(-1), val_idx
