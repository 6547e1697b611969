"""A batch's per-lane records and their sum, with no server."""

from __future__ import annotations

import pytest

from fabric_worker.wire.batch_record import BatchCounts, lane_counts, sum_lanes


def test_a_lane_record_reads_as_redis_returns_it() -> None:
    raw = {
        b"total": b"3",
        b"done": b"1",
        b"dead": b"1",
        b"created": b"10.5",
        b"cancelled_at": b"11",
    }
    c = lane_counts("x", raw)
    assert c == BatchCounts("x", 3, 1, 1, 0, created=10.5, finished=None, is_cancelled=True)
    assert (c.num_left, c.is_finished) == (1, False)
    assert lane_counts("x", {}) is None


def test_a_damaged_record_is_named_not_guessed() -> None:
    with pytest.raises(ValueError, match="total='many' is not an integer"):
        lane_counts("x", {b"total": b"many"})


def test_lanes_sum_and_the_batch_finishes_with_its_last_lane() -> None:
    one = BatchCounts("x", 2, 2, 0, 0, created=5.0, finished=9.0)
    two = BatchCounts("x", 3, 1, 1, 0, created=4.0, finished=None)
    running = sum_lanes("x", [one, None, two])
    assert running is not None
    assert (running.num_total, running.num_done, running.num_dead, running.num_left) == (5, 3, 1, 1)
    assert (running.created, running.finished, running.is_finished) == (4.0, None, False)
    done = sum_lanes("x", [one, BatchCounts("x", 3, 1, 1, 1, created=4.0, finished=12.0)])
    assert done is not None and done.is_finished and done.finished == 12.0
    assert done.to_json()["left"] == 0
    assert sum_lanes("x", [None, None]) is None
