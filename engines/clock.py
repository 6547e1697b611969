"""The one injectable clock.

Everything that measures or waits on time in an engine goes through a
:class:`Clock`, so the simulator can run on the wall clock (it really spends
each iteration's time) or on a :class:`VirtualClock` (time is a number that
moves only when someone sleeps), which makes tests fast and deterministic.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic time source that can also wait."""

    def now_s(self) -> float:
        """Seconds since an arbitrary, fixed origin; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of this clock's time pass (negative counts as 0)."""
        ...


class WallClock:
    """Real time: :func:`time.monotonic` and :func:`time.sleep`."""

    __slots__ = ()

    def now_s(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Simulated time: :meth:`sleep` returns at once and moves the clock.

    Not thread-safe; it belongs to the thread that drives the simulation.
    """

    __slots__ = ("_now_s",)

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)

    def now_s(self) -> float:
        return self._now_s

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (negative counts as 0)."""
        if seconds > 0:
            self._now_s += seconds
