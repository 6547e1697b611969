"""A worker's housekeeping: trimming results past the retention.

It runs beside the serving loops for as long as the worker runs, and goes on
when Redis is full: XTRIM is one of the commands a Redis at maxmemory still
accepts, and it is what frees the memory the worker is waiting for. When a
call of the worker meets "OOM" (``Link.out_of_memory``), every lane is trimmed
at once, before the worker waits for memory; otherwise each lane at most every
``every_s``, at a random phase so that a fleet's workers take turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from fabric_worker.broker.streams import Broker
from fabric_worker.broker.trim import trim_results_async
from fabric_worker.core.retention import DEFAULT_TRIM_EVERY_S, TrimSchedule

# How often the loop looks at the out-of-memory flag between trims: an
# attribute read, so often enough that a write refused for memory sees a trim
# before its first backoff is over.
OOM_POLL_S = 0.1


class Housekeeper:
    """Trims one worker's lanes on a :class:`TrimSchedule` until ``stop`` is set."""

    def __init__(
        self,
        broker: Broker,
        lanes: tuple[int, ...],
        retention_s: int,
        stop: asyncio.Event,
        *,
        log: Callable[[str], None],
        every_s: float = DEFAULT_TRIM_EVERY_S,
    ) -> None:
        self.broker = broker
        self.retention_s = retention_s
        self.stop = stop
        self.log = log
        self.schedule = TrimSchedule(lanes, time.monotonic(), every_s=every_s)
        self.num_trims = 0
        self.num_removed = 0

    async def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            is_oom = self.broker.link.out_of_memory
            lanes = self.schedule.due(now, is_out_of_memory=is_oom)
            if lanes:
                await self.trim(lanes, now, is_oom=is_oom)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), OOM_POLL_S)

    async def trim(self, lanes: list[int], now_s: float, *, is_oom: bool = False) -> None:
        """Trim ``lanes`` once. A failure is logged, never fatal: a Redis lost
        for the outage budget is the serving loops' to report (they fail the
        worker), and results kept longer than the retention lose nothing."""
        # Due again one interval on, failed or not: a failure is tried (and
        # logged) again then, not on every poll.
        for lane in lanes:
            self.schedule.trimmed(lane, now_s)
        try:
            trimmed = await trim_results_async(
                self.broker.link, self.broker.keys, lanes, self.retention_s
            )
        except Exception as exc:  # BrokerLost included
            self.log(f"housekeeping: trimming results failed: {type(exc).__name__}: {exc}")
            return
        self.num_trims += 1
        self.num_removed += trimmed.num_removed_total
        if trimmed.num_removed_total and is_oom:
            self.log(
                f"housekeeping: Redis is out of memory; trimmed {trimmed.num_removed_total} "
                f"results older than {self.retention_s} s"
            )
