"""Housekeeping: a failed trim is logged and waits for its next turn; one that
works counts what it removed. Stubs stand in for the link."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from fabric_worker.wire.keys import Keys
from fabric_worker.worker.housekeeping import Housekeeper

LANES = (64, 128)


class StubLink:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.out_of_memory = False
        self.redis = SimpleNamespace(time=lambda: (1_700_000_100, 0))
        self.num_calls = 0

    async def call(self, make: Callable[[], Any]) -> Any:
        self.num_calls += 1
        if self.fail:
            raise RuntimeError("NOPERM this user has no permissions to run the 'xtrim' command")
        reply = make()
        return await reply if isinstance(reply, Awaitable) else reply

    async def each(self, calls: list[Any]) -> list[int]:
        return [3] * len(calls)


def keeper(link: StubLink, lines: list[str]) -> Housekeeper:
    broker = SimpleNamespace(link=link, keys=Keys("hk"))
    return Housekeeper(broker, LANES, 60, asyncio.Event(), log=lines.append, every_s=5.0)  # type: ignore[arg-type]


def test_a_failed_trim_is_logged_and_not_retried_before_its_next_turn() -> None:
    lines: list[str] = []
    link = StubLink(fail=True)
    k = keeper(link, lines)
    now = time.monotonic()
    asyncio.run(k.trim(k.schedule.due(now), now))
    assert lines == [
        "housekeeping: trimming results failed: RuntimeError: NOPERM this user has no "
        "permissions to run the 'xtrim' command"
    ]
    assert k.schedule.due(now + 1.0) == []  # not on every poll
    assert k.schedule.due(now + 5.0 * 1.25) == list(LANES)
    assert (k.num_trims, k.num_removed) == (0, 0)


def test_a_trim_that_works_counts_what_it_removed() -> None:
    lines: list[str] = []
    k = keeper(StubLink(fail=False), lines)
    now = time.monotonic()
    asyncio.run(k.trim(k.schedule.due(now), now))
    assert (k.num_trims, k.num_removed, lines) == (1, 6, [])
