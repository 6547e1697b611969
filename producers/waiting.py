"""Waiting for jobs or a batch to finish: poll with backoff, up to a deadline.

Each poll costs a constant number of Redis calls per job still waited on
(a lookup) or per lane (a batch's records), pipelined; the caller says how.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0


class WaitTimeout(TimeoutError, Generic[T]):
    """Not everything was finished by the deadline; ``last`` is what the last
    poll saw."""

    def __init__(self, message: str, last: T) -> None:
        super().__init__(message)
        self.last = last


def wait_for(
    poll: Callable[[], T],
    is_done: Callable[[T], bool],
    *,
    timeout_s: float | None,
    what: str,
    on_poll: Callable[[T], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Poll until ``is_done`` holds, backing off from 50 ms to 1 s between
    polls; raises WaitTimeout past ``timeout_s`` (None: wait for ever)."""
    deadline = None if timeout_s is None else clock() + timeout_s
    pause = FIRST_POLL_S
    while True:
        seen = poll()
        if on_poll is not None:
            on_poll(seen)
        if is_done(seen):
            return seen
        now = clock()
        if deadline is not None and now >= deadline:
            raise WaitTimeout(f"{what} not finished after {timeout_s:g} s", seen)
        sleep(pause if deadline is None else min(pause, max(deadline - now, 0.0)))
        pause = min(pause * 2, MAX_POLL_S)
