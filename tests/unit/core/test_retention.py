"""Retention's pure part: the trim cutoff, stream id order and the trim schedule."""

from __future__ import annotations

import itertools
import random

import pytest

from fabric_worker.core.retention import MIN_TRIM_GAP_S, StreamId, TrimSchedule, trim_cutoff


def test_cutoff_keeps_an_entry_written_exactly_retention_ago() -> None:
    cutoff = trim_cutoff(1_700_000_060_000, 60)
    assert cutoff == StreamId(1_700_000_000_000, 0)
    # MINID removes ids below the cutoff only: one written 60 s ago stays,
    # one a millisecond older goes.
    assert not StreamId.parse("1700000000000-0") < cutoff
    assert StreamId.parse("1699999999999-99") < cutoff


@pytest.mark.parametrize(("now_ms", "retention_s"), [(10_000, 0), (10_000, -5), (5_000, 6)])
def test_cutoff_refuses_what_cannot_be_a_retention(now_ms: int, retention_s: int) -> None:
    with pytest.raises(ValueError, match="retention"):
        trim_cutoff(now_ms, retention_s)


def test_stream_ids_order_as_redis_orders_them() -> None:
    ids = ["10-2", "9-99", "10-10", "10", b"11-0"]
    assert [str(i) for i in sorted(map(StreamId.parse, ids))] == [
        "9-99",
        "10-0",
        "10-2",
        "10-10",
        "11-0",
    ]


@pytest.mark.parametrize("bad", ["", "abc", "1-", "-1", "1-2-3", "0x10-1"])
def test_a_malformed_stream_id_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="stream id"):
        StreamId.parse(bad)


def test_each_lane_is_trimmed_at_most_every_interval_and_at_least_once_in_each() -> None:
    lanes = (64, 128, 256)
    schedule = TrimSchedule(lanes, 0.0, every_s=4.0, rng=random.Random(7))
    trims: dict[int, list[float]] = {lane: [] for lane in lanes}
    now = 0.0
    while now < 100.0:
        for lane in schedule.due(now):
            trims[lane].append(now)
            schedule.trimmed(lane, now)
        now = round(now + 0.05, 2)
    for times in trims.values():
        assert times[0] == 0.0  # the first when the worker starts
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 4.0 * 0.75 - 1e-9  # jitter of at most a quarter
        assert max(gaps) <= 4.0 * 1.25 + 0.05 + 1e-9


def next_due_s(schedule: TrimSchedule, after_s: float) -> float:
    """When the schedule next says a lane is due, polled every 10 ms."""
    t = after_s
    while not schedule.due(t):
        t = round(t + 0.01, 2)
    return t


def test_workers_started_together_drift_apart() -> None:
    seconds = set()
    for seed in range(10):
        schedule = TrimSchedule((64,), 0.0, every_s=5.0, rng=random.Random(seed))
        assert schedule.due(0.0) == [64]
        schedule.trimmed(64, 0.0)
        seconds.add(next_due_s(schedule, 0.0))
    assert len(seconds) >= 8  # on a 10 ms grid, two may share a slot


def test_out_of_memory_trims_every_lane_at_once_but_not_in_a_flood() -> None:
    schedule = TrimSchedule((64, 128), 0.0, every_s=30.0, rng=random.Random(1))
    for lane in schedule.due(0.0):
        schedule.trimmed(lane, 0.0)
    assert schedule.due(10.0) == []  # nothing due on the timer for a while
    assert schedule.due(10.0, is_out_of_memory=True) == [64, 128]
    for lane in (64, 128):
        schedule.trimmed(lane, 10.0)
    assert schedule.due(10.0 + MIN_TRIM_GAP_S / 2, is_out_of_memory=True) == []
    assert schedule.due(10.0 + MIN_TRIM_GAP_S, is_out_of_memory=True) == [64, 128]


def test_a_schedule_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="every_s"):
        TrimSchedule((64,), 0.0, every_s=0.0)
