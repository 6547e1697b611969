"""Outbox: batches from the engine thread to the drain, bounded, in order, none lost."""

from __future__ import annotations

import threading
import time

import pytest

from engines.contract import EngineOutput, FinishReason
from fabric_worker.worker.outbox import Outbox


def outputs(first: int, count: int) -> list[EngineOutput]:
    return [EngineOutput(i, [i], FinishReason.LENGTH) for i in range(first, first + count)]


def never() -> bool:
    return False


def ids(taken: list[EngineOutput]) -> list[int]:
    return [o.request_id for o in taken]


def test_takes_split_batches_and_keep_their_order() -> None:
    box = Outbox(max_outputs=100)
    assert box.put(outputs(0, 4), is_stopping=never)
    assert box.put(outputs(4, 3), is_stopping=never)
    assert box.qsize() == 7
    assert ids(box.take(2)) == [0, 1]
    assert ids(box.take(3)) == [2, 3, 4]
    assert box.qsize() == 2
    assert ids(box.take(10)) == [5, 6]
    assert box.empty()
    assert box.take(10) == []


def test_a_batch_larger_than_the_bound_goes_into_an_empty_outbox() -> None:
    box = Outbox(max_outputs=2)
    assert box.put(outputs(0, 5), is_stopping=never)
    assert ids(box.take(5)) == [0, 1, 2, 3, 4]


class Watch:
    """An ``is_stopping`` that records that a put found the outbox full."""

    def __init__(self, *, stop: bool = False) -> None:
        self.waited = threading.Event()
        self.stop = stop

    def __call__(self) -> bool:
        self.waited.set()
        return self.stop


def test_a_put_that_would_overfill_waits_for_a_take() -> None:
    box = Outbox(max_outputs=4)
    box.put(outputs(0, 3), is_stopping=never)
    watch = Watch()
    result: list[bool] = []
    putter = threading.Thread(
        target=lambda: result.append(box.put(outputs(3, 2), is_stopping=watch))
    )
    putter.start()
    assert watch.waited.wait(10), "the put did not wait on a full outbox"
    assert box.qsize() == 3  # nothing went in while it waited
    assert ids(box.take(1)) == [0]  # now 2 + 2 fit
    putter.join(10)
    assert result == [True]
    assert ids(box.take(10)) == [1, 2, 3, 4]


def test_a_put_waiting_when_the_worker_stops_drops_its_batch() -> None:
    box = Outbox(max_outputs=1)
    box.put(outputs(0, 1), is_stopping=never)
    watch = Watch(stop=True)
    assert box.put(outputs(1, 1), is_stopping=watch) is False
    assert watch.waited.is_set()
    assert ids(box.take(10)) == [0]


class WatchedCondition(threading.Condition):
    """A condition that says when a thread first waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()  # still under the lock: a put cannot land before the wait
        return super().wait(timeout)


def test_a_take_with_a_timeout_waits_for_the_next_put() -> None:
    box = Outbox(max_outputs=10)
    cond = box._cond = WatchedCondition()

    def put_once_take_waits() -> None:
        # put() needs the lock, which take() gives up only inside its wait: the
        # outputs arrive while take() is waiting, never before it.
        if cond.waiting.wait(10):
            box.put(outputs(0, 2), is_stopping=never)

    putter = threading.Thread(target=put_once_take_waits)
    putter.start()
    assert ids(box.take(10, timeout_s=10)) == [0, 1]
    putter.join(10)
    assert cond.waiting.is_set()  # it did wait: the outputs could not have come first


def test_a_take_without_a_timeout_never_waits() -> None:
    box = Outbox(max_outputs=10)
    began = time.monotonic()
    assert box.take(10) == []
    assert time.monotonic() - began < 1.0


def test_many_batches_across_threads_arrive_whole_and_in_order() -> None:
    box = Outbox(max_outputs=16)
    num_outputs = 5000

    def produce() -> None:
        first = 0
        for size in [1, 7, 16, 3, 40] * 1000:
            if first >= num_outputs:
                return
            size = min(size, num_outputs - first)
            assert box.put(outputs(first, size), is_stopping=never)
            first += size

    producer = threading.Thread(target=produce)
    producer.start()
    taken: list[EngineOutput] = []
    deadline = time.monotonic() + 30
    while len(taken) < num_outputs and time.monotonic() < deadline:
        taken += box.take(5, timeout_s=1.0)
    producer.join(10)
    assert ids(taken) == list(range(num_outputs))


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_outputs"):
        Outbox(0)
