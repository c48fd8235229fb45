"""Durations a person reads at a glance, and the pace of a loop measured after its warm-up.

Pure and torch-free: the command line, the training loop, the range test, the
demo and the reports share these, so every time superconv prints reads the same
way and every estimate comes from the same kind of measurement.

The first steps of a run are slower than the rest (memory allocation, kernel
selection, lazy compilation, cold caches and data): an estimate that counts them
overstates a long run's time many times over. :class:`Pace` therefore starts its
clock only after :data:`WARMUP_STEPS` steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WARMUP_STEPS", "Pace", "Progress", "format_duration"]

# Steps left out of every pace measurement: the first two differ most (allocation and
# kernel selection; runner._measure and demo._measure_speed skip them too), and a
# few more cover lazily built pieces (data caches, autocast, compiled graphs).
WARMUP_STEPS = 5


def format_duration(seconds: float) -> str:
    """A time a person reads at a glance, in s, min or h and min.

    >>> format_duration(0.2), format_duration(42), format_duration(720), format_duration(12_300)
    ('under 1 s', '42 s', '12 min', '3 h 25 min')
    >>> format_duration(49_449_600)
    '13,736 h (572 days)'
    """
    if seconds < 0.5:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours:,} h ({hours / 24:,.0f} days)"


@dataclass
class Pace:
    """Seconds per step of a loop of ``total`` steps, from clock reads after its warm-up.

    Call :meth:`tick` with the number of steps done so far (at any steps: every
    step, or only where the loop syncs with the device, so that the clock reads
    finished work). The first tick at least ``warmup`` steps past ``start`` (a
    resumed run starts later) sets the anchor; the pace is the time since the
    anchor over the steps since it, evaluations and checkpoints between included
    (they recur for the rest of the run too). ``clock`` is injectable: tests use a
    fake one.

    >>> now = iter([10.0, 20.0, 30.0, 40.0, 50.0, 51.0, 52.0]).__next__  # 10 s, then 1 s
    >>> pace = Pace(total=100, warmup=5, clock=now)
    >>> for done in range(1, 8):
    ...     pace.tick(done)
    >>> pace.seconds_per_step, pace.remaining(), pace.eta()
    (1.0, 93.0, '2 min')
    """

    total: int
    start: int = 0
    warmup: int = WARMUP_STEPS
    clock: Callable[[], float] = time.perf_counter
    _last: tuple[int, float] | None = field(default=None, repr=False)  # (done, time); the anchor
    _seconds: float = field(default=0.0, repr=False)
    _steps: int = field(default=0, repr=False)

    def tick(self, done: int, counted: bool = True) -> None:
        """Record that ``done`` steps (counted from 0, not from ``start``) are finished.

        ``counted=False`` leaves the time since the previous tick out of the pace
        (it held other work: the range test's evaluations, say).
        """
        now = self.clock()
        if self._last is None:
            if done - self.start >= self.warmup:
                self._last = (done, now)
            return
        before, then = self._last
        if done <= before:
            return
        if counted:
            self._seconds += max(now - then, 0.0)
            self._steps += done - before
        self._last = (done, now)

    @property
    def done(self) -> int:
        """Steps finished at the last tick past the warm-up (``start`` before that)."""
        return self._last[0] if self._last is not None else self.start

    @property
    def seconds_per_step(self) -> float | None:
        """Seconds per counted step since the warm-up; None until one is counted."""
        return self._seconds / self._steps if self._steps else None

    def remaining(self) -> float | None:
        """Seconds left for the steps after the last tick; None while still measuring."""
        rate = self.seconds_per_step
        return None if rate is None else rate * max(self.total - self.done, 0)

    def eta(self) -> str:
        """The time left in words (``"12 min"``), or ``"measuring"`` during the warm-up."""
        left = self.remaining()
        return "measuring" if left is None else format_duration(left)


class Progress:
    """A tqdm bar whose time left comes from a :class:`Pace`.

    tqdm's own estimate averages the warm-up into its rate; this bar shows the
    elapsed time, the steps and ``left=...`` from the pace. ``postfix`` values
    given to :meth:`show` stay until replaced.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, pace: Pace, desc: str | None = None) -> None:
        from tqdm.auto import tqdm

        self.pace = pace
        self.postfix: dict[str, Any] = {}
        self.bar = tqdm(
            total=pace.total,
            initial=pace.start,
            desc=desc,
            unit="it",
            dynamic_ncols=True,
            leave=False,
            bar_format=self.BAR_FORMAT,
        )

    def show(self, done: int, **postfix: Any) -> None:
        """Move the bar to ``done`` steps and show ``postfix`` with the time left."""
        self.postfix.update(postfix)
        self.bar.set_postfix({**self.postfix, "left": self.pace.eta()}, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
