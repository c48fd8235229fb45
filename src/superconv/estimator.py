"""The Hessian-free learning-rate estimate of Smith & Topin (2017), section 5, eq. 8.

From three successive weight vectors theta_i, theta_{i+1}, theta_{i+2}, taken with
learning rate eps, eq. 8 estimates the optimal learning rate as::

    lr_opt = eps * sum|theta_{i+1} - theta_i| / sum|2 theta_{i+1} - theta_i - theta_{i+2}|

summing numerator and denominator over all weights ("we sum the absolute values of
each quantity to maintain positivity"); the square root of the sum of squares
(``norm="l2"``) "leads to similar results". On an exact quadratic
f(x) = h/2 ||x||^2 trained by plain SGD the estimate is exactly 1/h.

:func:`estimate_lr` is the pure formula; :class:`LREstimator` is a read-only
observer for any training loop that keeps weight snapshots every ``k`` iterations
(k=1 for Fig. 5a, k=10 for Fig. 5b) and the paper's moving average
``LR <- beta * est + (1 - beta) * LR`` with beta = 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from superconv.errors import UserError

NORMS = ("l1", "l2")


def estimate_lr(
    theta_i: torch.Tensor | Sequence[torch.Tensor],
    theta_next: torch.Tensor | Sequence[torch.Tensor],
    theta_next2: torch.Tensor | Sequence[torch.Tensor],
    lr_used: float,
    norm: str = "l1",
) -> float:
    """Eq. 8: ``lr_used * sum|theta_next - theta_i| / sum|2 theta_next - theta_i - theta_next2|``.

    Each ``theta`` is one flat tensor or a sequence of tensors (one per trainable
    parameter, in the same order for all three). ``lr_used`` is the learning rate
    that took ``theta_i`` to ``theta_next`` (for snapshots ``k`` iterations apart,
    the sum of the ``k`` learning rates applied in between). ``norm="l2"`` uses
    the square root of the sum of squares instead of the sum of absolute values.
    Computed in float64.

    A zero denominator (the weights moved along a straight line at constant
    speed, or did not move at all) returns ``math.inf`` rather than raising: the
    curvature along the step is zero, so eq. 8 puts no upper bound on the LR.

    >>> import torch
    >>> h, lr = 4.0, 0.05                      # SGD on f(x) = h/2 x^2: x <- (1 - lr h) x
    >>> x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    >>> x1 = (1 - lr * h) * x0; x2 = (1 - lr * h) * x1
    >>> round(estimate_lr(x0, x1, x2, lr), 12)  # exactly 1/h
    0.25
    """
    _check_norm(norm)
    if not math.isfinite(lr_used) or lr_used < 0:
        raise UserError(f"lr_used must be a finite learning rate >= 0, got {lr_used!r}.")
    a = _flat64(theta_i, "theta_i")
    b = _flat64(theta_next, "theta_next")
    c = _flat64(theta_next2, "theta_next2")
    if not a.numel() == b.numel() == c.numel():
        raise UserError(
            f"the three weight snapshots must have the same number of elements, got "
            f"{a.numel()}, {b.numel()} and {c.numel()}."
        )
    return float(_eq8(b - a, c - b, lr_used, norm))


def _eq8(d_first: torch.Tensor, d_second: torch.Tensor, lr_used: Any, norm: str) -> torch.Tensor:
    """Eq. 8 from the two weight differences, as a 0-dim float64 tensor (no host sync).

    2 theta_{i+1} - theta_i - theta_{i+2} is computed as d_first - d_second, the
    difference of the two steps: subtracting nearby weights first keeps the
    denominator accurate in float32 (no cancellation against |theta| itself).
    """
    order = 1 if norm == "l1" else 2
    dtype = torch.float32 if d_first.device.type == "mps" else torch.float64
    num = torch.linalg.vector_norm(d_first, ord=order, dtype=dtype)
    den = torch.linalg.vector_norm(d_first - d_second, ord=order, dtype=dtype)
    est = lr_used * num / den
    return torch.where(den == 0, torch.full_like(est, math.inf), est)


def _flat64(theta: torch.Tensor | Sequence[torch.Tensor], name: str) -> torch.Tensor:
    if isinstance(theta, torch.Tensor):
        return theta.detach().reshape(-1).double()
    tensors = list(theta)
    if not tensors:
        raise UserError(f"{name} is an empty sequence of tensors: eq. 8 needs at least one weight.")
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise UserError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}.")


class LREstimator:
    """Observer that applies eq. 8 to weight snapshots taken every ``k`` iterations.

    Call it as ``observer(step, model, optimizer, metrics)`` after each
    ``optimizer.step()``; it only reads. The first call takes the first snapshot.
    Afterwards it sums the learning rates applied (``optimizer.param_groups[0]["lr"]``
    at call time) and snapshots the trainable weights (``requires_grad``
    parameters; BN running statistics are buffers and are excluded) every ``k``
    calls. With snapshots theta_a, theta_b, theta_c the estimate uses as
    ``lr_used`` the sum of the ``k`` LRs that took theta_a to theta_b, the step
    in eq. 8's numerator (paper section 5: "the learning rate value actually used
    in the calculations to update the weights"). On f = h/2 ||x||^2 with plain SGD
    at constant ``lr`` that makes the estimate ``k lr / (1 - (1 - lr h)^k)``:
    exactly 1/h for k=1, and 1/h * (1 + (k-1) lr h / 2 + O((lr h)^2)) for k > 1.

    Each estimate is smoothed as in the paper, ``LR <- beta * est + (1 - beta) * LR``
    (beta = 0.1), starting at the first finite estimate; an infinite estimate
    (zero denominator, see :func:`estimate_lr`) is recorded raw but leaves the
    moving average unchanged.

    Cost: snapshots are flat buffers on the model's device, reused between
    snapshots; the sums stay on the device as 0-dim tensors, so no step forces a
    host sync. ``history`` converts them to floats when it is read.

    ``history`` is a list of ``(step, raw_estimate, smoothed)``; ``state_dict()`` /
    ``load_state_dict()`` carry the snapshots, the LR sums and the moving average
    so a resumed run continues the estimate exactly.
    """

    def __init__(self, k: int = 1, beta: float = 0.1, norm: str = "l1"):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(
                f"k (iterations between weight snapshots) must be an integer >= 1, got {k!r}."
            )
        if not (isinstance(beta, (int, float)) and 0 < beta <= 1):
            raise UserError(
                f"beta (moving-average weight of a new estimate) must be in (0, 1], got {beta!r}."
            )
        _check_norm(norm)
        self.k, self.beta, self.norm = k, float(beta), norm
        self._snapshot: torch.Tensor | None = None  # theta at the last snapshot
        self._spare: torch.Tensor | None = None  # buffer the next snapshot is gathered into
        self._diff: torch.Tensor | None = None  # theta_b - theta_a, the previous interval's step
        self._lr_prev: Any = None  # sum of the LRs that made _diff
        self._lr_acc: Any = 0.0  # sum of the LRs applied since the last snapshot
        self._count = 0  # optimizer steps since the last snapshot
        self._smoothed: torch.Tensor | None = None
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # not yet read to host
        self._history: list[tuple[int, float, float]] = []

    def __call__(
        self, step: int, model: torch.nn.Module, optimizer: Any, metrics: Any = None
    ) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        if self._snapshot is None:
            self._snapshot = self._gather(params, None)
            return
        self._lr_acc = self._lr_acc + optimizer.param_groups[0]["lr"]
        self._count += 1
        if self._count < self.k:
            return
        self._snapshot = self._snapshot.to(params[0].device)
        current = self._gather(params, self._spare)
        diff = torch.sub(current, self._snapshot, out=self._snapshot)  # reuse theta_a's memory
        if self._diff is not None:
            self._record(step, _eq8(self._diff.to(diff.device), diff, self._lr_prev, self.norm))
        # The old diff's memory becomes the next gather buffer: three flat buffers in all.
        self._spare, self._diff, self._snapshot = self._diff, diff, current
        self._lr_prev, self._lr_acc, self._count = self._lr_acc, 0.0, 0

    def _gather(self, params: list[torch.Tensor], out: torch.Tensor | None) -> torch.Tensor:
        if not params:
            raise UserError("LREstimator: the model has no trainable parameters (requires_grad).")
        numel = sum(p.numel() for p in params)
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        if self._snapshot is not None and self._snapshot.numel() != numel:
            raise UserError(
                f"LREstimator: the model's trainable parameters changed size ({self._snapshot.numel()} "
                f"-> {numel} elements) between snapshots; use one estimator per model."
            )
        if out is None or out.device != params[0].device or out.dtype != dtype:
            out = torch.empty(numel, device=params[0].device, dtype=dtype)
        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1) for p in params], out=out)

    def _record(self, step: int, raw: torch.Tensor) -> None:
        if self._smoothed is None:
            self._smoothed = torch.full_like(raw, math.inf)
        prev = self._smoothed.to(raw.device)
        ema = self.beta * raw + (1 - self.beta) * prev
        # Paper section 5 moving average, started at the first finite estimate.
        started = torch.where(torch.isfinite(prev), ema, raw)
        self._smoothed = torch.where(torch.isfinite(raw), started, prev)
        self._pending.append((step, raw, self._smoothed))

    @property
    def history(self) -> list[tuple[int, float, float]]:
        """``(step, raw_estimate, smoothed)`` for every estimate so far, as floats."""
        if self._pending:
            values = torch.stack([torch.stack((r, s)) for _, r, s in self._pending]).cpu().tolist()
            self._history.extend((st, r, s) for (st, _, _), (r, s) in zip(self._pending, values))
            self._pending = []
        return list(self._history)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the estimate identically."""

        def clone(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().clone()

        return {
            "k": self.k,
            "beta": self.beta,
            "norm": self.norm,
            "count": self._count,
            "lr_acc": self._lr_acc,
            "lr_prev": self._lr_prev,
            "snapshot": clone(self._snapshot),
            "diff": clone(self._diff),
            "smoothed": clone(self._smoothed),
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses one taken with other ``k``/``beta``/``norm``."""
        mine = {"k": self.k, "beta": self.beta, "norm": self.norm}
        theirs = {key: state.get(key) for key in mine}
        if theirs != mine:
            raise UserError(
                f"LREstimator state was saved with {theirs}, this estimator has {mine}."
            )
        self._count = int(state["count"])
        self._lr_acc, self._lr_prev = state["lr_acc"], state["lr_prev"]
        self._snapshot, self._diff = state["snapshot"], state["diff"]
        self._smoothed, self._spare = state["smoothed"], None
        self._pending = []
        self._history = [(int(s), float(r), float(m)) for s, r, m in state["history"]]
