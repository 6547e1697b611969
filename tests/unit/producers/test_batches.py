"""Batch names and waiting, with no server."""

from __future__ import annotations

from array import array

import orjson
import pytest

from fabric_worker.wire.entries import (
    EntryError,
    JobEntry,
    ResultEntry,
    decode_job,
    decode_result,
    encode_job,
    encode_result,
    peek_batch,
)
from producers.validation import JobError, check_batch, new_batch_name
from producers.waiting import WaitTimeout, wait_for


def test_batch_names_take_the_id_rules() -> None:
    assert check_batch("nightly-2026.12:a_b") == "nightly-2026.12:a_b"
    for bad in ("", "has space", "x" * 129, "brace{L64}"):
        with pytest.raises(JobError, match="batch"):
            check_batch(bad)
    made = new_batch_name(0.0)
    assert made.startswith("batch-19700101T000000Z-") and check_batch(made) == made
    assert new_batch_name(0.0) != made


def test_the_batch_travels_in_the_header_and_a_bad_one_is_refused() -> None:
    fields = encode_job(JobEntry("j", array("I", [1, 2]), 4, batch="b1"))
    assert decode_job(fields, vocab_size=10, max_prompt_tokens=64).batch == "b1"
    assert peek_batch(fields) == "b1"
    plain = encode_job(JobEntry("j", array("I", [1, 2]), 4))
    assert b"batch" not in plain["h"]  # a job of no batch keeps its bytes
    header = orjson.loads(fields["h"])
    forged = {**fields, "h": orjson.dumps({**header, "batch": "a b"})}
    with pytest.raises(EntryError, match="batch 'a b' is not"):
        decode_job(forged, vocab_size=10, max_prompt_tokens=64)
    assert peek_batch(forged) is None
    result = encode_result(ResultEntry("j", [3], "stop", 1, "w", 0.0, 0.0, 1.0, batch="b1"))
    assert decode_result(result).batch == "b1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_backs_off_and_stops_at_the_deadline() -> None:
    clock = FakeClock()
    seen: list[int] = []
    with pytest.raises(WaitTimeout, match="3 jobs not finished after 1 s") as exc:
        wait_for(
            lambda: len(seen),
            lambda n: False,
            timeout_s=1.0,
            what="3 jobs",
            on_poll=seen.append,
            clock=clock,
            sleep=clock.sleep,
        )
    assert exc.value.last == len(seen) - 1
    assert clock.sleeps[:4] == [0.05, 0.1, 0.2, 0.4]
    assert sum(clock.sleeps) == pytest.approx(1.0)  # the last pause ends at the deadline


def test_wait_returns_what_the_finishing_poll_saw() -> None:
    clock = FakeClock()
    polls = iter([1, 2, 3])
    got = wait_for(
        lambda: next(polls),
        lambda n: n == 3,
        timeout_s=None,
        what="x",
        clock=clock,
        sleep=clock.sleep,
    )
    assert (got, len(clock.sleeps)) == (3, 2)
