"""Durations in h and min, and the pace (ETA) measured after the warm-up, with a fake clock."""

from __future__ import annotations

import doctest
import itertools

import pytest

from superconv import timing
from superconv.timing import WARMUP_STEPS, Pace, Progress, format_duration


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.2, "under 1 s"),
        (42, "42 s"),
        (89.4, "89 s"),
        (125, "2 min"),
        (12 * 60, "12 min"),
        (89 * 60, "89 min"),
        (3 * 3600 + 25 * 60, "3 h 25 min"),
        (47 * 3600, "47 h 00 min"),
        (13736 * 3600, "13,736 h (572 days)"),  # not "13736.0 h" (issue 23)
    ],
)
def test_durations_read_in_seconds_minutes_and_hours(seconds, text):
    assert format_duration(seconds) == text


def fake_clock(times):
    """A clock that returns ``times`` one by one (a test fails if it is read more often)."""
    return iter(times).__next__


def test_pace_leaves_the_warm_up_out():
    # the first WARMUP_STEPS steps take 10 s each, the rest 0.5 s
    times = [10.0 * k for k in range(1, WARMUP_STEPS + 1)]
    times += [times[-1] + 0.5 * k for k in range(1, 11)]
    pace = Pace(total=1000, clock=fake_clock(times))
    for done in range(1, WARMUP_STEPS + 1):
        pace.tick(done)
        assert pace.seconds_per_step is None and pace.eta() == "measuring"
    for done in range(WARMUP_STEPS + 1, WARMUP_STEPS + 11):
        pace.tick(done)
    assert pace.seconds_per_step == pytest.approx(0.5)  # the mean of all steps: 3.6 s
    assert pace.remaining() == pytest.approx(0.5 * (1000 - WARMUP_STEPS - 10))
    assert pace.eta() == format_duration(0.5 * (1000 - WARMUP_STEPS - 10)) == "8 min"


def test_pace_reads_at_log_steps_and_after_a_resume():
    # ticks every 10 steps of a run resumed at step 500: the anchor is the first tick at
    # least WARMUP_STEPS past 500 (its 100 s hold the warm-up), and the steps between ticks
    # count, not the ticks
    pace = Pace(total=1000, start=500, clock=fake_clock([100.0, 102.0, 104.0, 106.0]))
    for done in (510, 520, 530, 540):
        pace.tick(done)
    assert pace.seconds_per_step == pytest.approx(0.2)
    assert pace.done == 540 and pace.remaining() == pytest.approx(0.2 * 460)


def test_pace_can_leave_out_an_interval_that_held_other_work():
    # the interval ending at step 8 held a 60 s evaluation
    times = [0.0] * WARMUP_STEPS + [1.0, 2.0, 62.0, 63.0]
    pace = Pace(total=100, clock=fake_clock(times))
    for done in range(1, WARMUP_STEPS + 5):
        pace.tick(done, counted=done != WARMUP_STEPS + 3)
    assert pace.seconds_per_step == pytest.approx(1.0)


def test_the_progress_bar_shows_the_time_left_from_the_pace(capsys):
    clock = itertools.count(0.0, 2.0).__next__  # 2 s per read: 2 s per step
    pace = Pace(total=100, clock=clock)
    bar = Progress(pace, desc="test")
    for done in range(1, 11):
        pace.tick(done)
        bar.show(done, loss="1.0")
    bar.bar.refresh()
    text = capsys.readouterr().err
    bar.close()
    assert "left=3 min" in text and "loss=1.0" in text  # 90 steps x 2 s
    assert "<" not in text.split("test")[-1]  # not tqdm's own estimate


def test_the_doctests_run():
    result = doctest.testmod(timing)
    assert result.attempted > 0 and result.failed == 0
