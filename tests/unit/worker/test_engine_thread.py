"""EngineThread: how often it snapshots the engine's stats, on an injected clock."""

from __future__ import annotations

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


def run_to_dry(clock: StepClock, interval_s: float = 0.5) -> tuple[OnePerPoll, EngineThread]:
    engine = OnePerPoll()
    thread = EngineThread(lambda: engine, stats_interval_s=interval_s, clock=clock)
    # Submitted before the thread starts: all of them reach the engine in one batch.
    thread.submit([EngineRequest(i, [1, 2], 1) for i in range(NUM_REQUESTS)])
    thread.start()
    outputs = [thread.outbox.get(timeout=30) for _ in range(NUM_REQUESTS)]
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
