"""bench.feed_timeline's figures on hand-made timelines: where a contender's time went."""

from __future__ import annotations

import pytest

from bench.feed_timeline import Timeline, in_flight, summarise


def test_a_late_refill_counts_as_short_and_the_gaps_between_polls_as_the_drivers() -> None:
    # 4 jobs, room for 2 at once: 2 submitted at 1.0, polls 1.0-2.0 (one finishes)
    # and 2.5-3.0 (the other finishes), the last 2 submitted only at 3.5, done by 5.0.
    timeline = Timeline(
        submits=[(1.0, 2), (3.5, 2)],
        polls=[(1.0, 2.0, 1), (2.5, 3.0, 1), (3.5, 5.0, 2)],
    )
    figures = summarise(timeline, start=0.5, end=5.5, num_jobs=4, max_running=2)
    assert figures["first_submit_s"] == pytest.approx(0.5)
    assert figures["busy_s"] == pytest.approx(3.0)
    assert figures["busy_fraction"] == pytest.approx(3.0 / 5.0)
    # between polls with work held: 2.0-2.5 (one job held); 3.0-3.5 held nothing
    assert figures["gap_held_s"] == pytest.approx(0.5)
    # one running of two possible from 2.0 to 3.0, none from 3.0 to 3.5, while 2 waited
    assert figures["short_s"] == pytest.approx(1.5)
    assert figures["tail_s"] == pytest.approx(0.5)
    assert in_flight(timeline) == [(1.0, 2), (2.0, 1), (3.0, 0), (3.5, 2), (5.0, 0)]


def test_everything_submitted_at_once_is_never_short() -> None:
    timeline = Timeline(submits=[(0.0, 3)], polls=[(0.0, 1.0, 1), (1.0, 2.0, 2)])
    figures = summarise(timeline, start=0.0, end=2.0, num_jobs=3, max_running=2)
    assert (figures["short_s"], figures["gap_held_s"], figures["tail_s"]) == (0.0, 0.0, 0.0)
    assert figures["busy_fraction"] == 1.0
