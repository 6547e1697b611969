"""The reclaim loop claims nothing while Redis is out of memory, as ingress.

XAUTOCLAIM carries no ``denyoom`` flag: a full Redis still hands entries over,
and a worker that took them could not write their results. Stubs stand in for
the broker and the core; the loop itself is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from fabric_worker.worker.loops import Serving

LANES = (64, 128)


class StubBroker:
    def __init__(self) -> None:
        self.link = SimpleNamespace(out_of_memory=True)
        self.num_recoveries = 0
        self.reclaims: list[int] = []

    async def reclaim(self, lane: int, min_idle_ms: int, count: int) -> list[Any]:
        self.reclaims.append(lane)
        return []


class StubReads:
    def __init__(self) -> None:
        self.num_asked = 0

    def reclaim_count(self, lane: int) -> int:
        self.num_asked += 1  # one per lane per round: the loop is going round
        return 10


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def test_reclaim_stops_while_out_of_memory_and_resumes_after() -> None:
    async def body() -> None:
        broker, reads = StubBroker(), StubReads()
        host = SimpleNamespace(
            broker=broker,
            engine_thread=SimpleNamespace(),
            options=SimpleNamespace(reclaim_every_s=0.001),
            config=SimpleNamespace(lanes=LANES, lease_s=1.0),
            stop_requested=asyncio.Event(),
        )
        serving = Serving(host, SimpleNamespace(reads=reads))  # type: ignore[arg-type]
        task = asyncio.create_task(serving._reclaim())
        try:
            await wait_until(lambda: reads.num_asked >= 20, "ten rounds out of memory")
            assert broker.reclaims == []
            broker.link.out_of_memory = False
            await wait_until(lambda: set(broker.reclaims) == set(LANES), "a reclaim of each lane")
        finally:
            host.stop_requested.set()
            await task

    asyncio.run(body())
