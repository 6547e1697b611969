"""EngineThread: how often it snapshots the engine's stats, on an injected clock, and
that its outbox hands on every output, in order."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import pytest

from engines.contract import (
    Capacity,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
)
from fabric_worker.worker.engine_thread import EngineThread

NUM_REQUESTS = 10
CAPACITY = Capacity(
    max_batch_size=16, max_num_tokens=256, kv_cache_tokens=4096, kv_block_tokens=32, max_seq_len=512
)


class OnePerPoll:
    """Finishes one held request per poll; counts polls and stats() calls."""

    def __init__(self) -> None:
        self.held: list[EngineRequest] = []
        self.num_polls = 0
        self.num_stats_calls = 0

    @property
    def capacity(self) -> Capacity:
        return CAPACITY

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        self.held.extend(requests)

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        self.num_polls += 1
        if not self.held:
            return []
        request = self.held.pop(0)
        return [EngineOutput(request.request_id, [1], FinishReason.LENGTH)]

    def cancel(self, request_ids: Iterable[int]) -> None:
        self.held = [r for r in self.held if r.request_id not in set(request_ids)]

    def stats(self) -> EngineStats:
        self.num_stats_calls += 1
        return EngineStats(num_steps=self.num_polls)

    def close(self) -> None:
        pass


class StepClock:
    """Advances by ``step_s`` on every reading."""

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.now_s = 0.0

    def __call__(self) -> float:
        self.now_s += self.step_s
        return self.now_s


def take_all(thread: EngineThread, num_outputs: int, timeout_s: float = 30.0) -> list[EngineOutput]:
    """Every output the thread emits until there are ``num_outputs``, in order."""
    deadline = time.monotonic() + timeout_s
    outputs: list[EngineOutput] = []
    while len(outputs) < num_outputs:
        left_s = deadline - time.monotonic()
        assert left_s > 0, f"{len(outputs)} of {num_outputs} outputs after {timeout_s} s"
        outputs += thread.outbox.take(num_outputs - len(outputs), timeout_s=left_s)
    return outputs


def run_to_dry(clock: StepClock, interval_s: float = 0.5) -> tuple[OnePerPoll, EngineThread]:
    engine = OnePerPoll()
    thread = EngineThread(lambda: engine, stats_interval_s=interval_s, clock=clock)
    # Submitted before the thread starts: all of them reach the engine in one batch.
    thread.submit([EngineRequest(i, [1, 2], 1) for i in range(NUM_REQUESTS)])
    thread.start()
    outputs = take_all(thread, NUM_REQUESTS)
    assert sorted(o.request_id for o in outputs) == list(range(NUM_REQUESTS))
    thread.stop()
    assert thread.join(30)
    assert thread.error is None
    return engine, thread


def test_a_frozen_clock_snapshots_at_the_first_poll_and_when_the_engine_runs_dry() -> None:
    engine, thread = run_to_dry(StepClock(0.0))
    assert engine.num_polls == NUM_REQUESTS
    assert engine.num_stats_calls == 2
    assert thread.stats.num_steps == NUM_REQUESTS  # the last snapshot is the final count


def test_a_clock_past_the_interval_at_every_poll_snapshots_every_poll() -> None:
    engine, _ = run_to_dry(StepClock(1.0))
    assert engine.num_stats_calls == NUM_REQUESTS


def test_one_snapshot_per_interval_while_busy() -> None:
    # 0.2 s per poll, 0.5 s interval: polls 1, 4, 7 are due (0.2, 0.8, 1.4), and 10 runs dry.
    engine, _ = run_to_dry(StepClock(0.2))
    assert engine.num_stats_calls == 4


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="stats_interval_s"):
        EngineThread(OnePerPoll, stats_interval_s=-1.0)


class SomePerPoll(OnePerPoll):
    """Finishes up to ``per_poll`` held requests per poll, oldest first."""

    def __init__(self, per_poll: int) -> None:
        super().__init__()
        self.per_poll = per_poll

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        self.num_polls += 1
        done, self.held = self.held[: self.per_poll], self.held[self.per_poll :]
        return [EngineOutput(r.request_id, [r.request_id], FinishReason.LENGTH) for r in done]


def test_every_output_reaches_the_drain_once_and_in_order_through_a_small_outbox() -> None:
    engine = SomePerPoll(per_poll=7)
    # An outbox smaller than a poll's outputs: puts wait for takes, batches split.
    thread = EngineThread(lambda: engine, max_outbox=5)
    num_requests = 200
    thread.submit([EngineRequest(i, [1], 1) for i in range(num_requests)])
    thread.start()
    outputs: list[EngineOutput] = []
    deadline = time.monotonic() + 30
    while len(outputs) < num_requests and time.monotonic() < deadline:
        assert thread.outbox.qsize() <= 7  # bounded: at most one poll's batch past the bound
        outputs += thread.outbox.take(3, timeout_s=1.0)
    assert [o.request_id for o in outputs] == list(range(num_requests))
    assert all(o.tokens == [o.request_id] for o in outputs)
    thread.stop()
    assert thread.join(30)
    assert thread.error is None
    assert thread.outbox.empty()
