"""Retention: which results may go, and how often a worker trims each lane.

Stream entry ids are ``<ms>-<seq>``, the milliseconds of the server's clock
when the entry was added. A result is kept for at least the retention after it
was written: it may go once the server's clock is past its id plus the
retention, and ``XTRIM MINID <cutoff>`` removes exactly the entries below
``cutoff`` (exact, without ``~``: the approximate form also keeps the promise,
but it keeps whole nodes of older entries too, which makes "trimmed" depend on
the stream's node size). Pure: the server's time comes in as a number.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

DEFAULT_TRIM_EVERY_S = 5.0
# Out of memory, a worker trims at once, but not more often than this per lane:
# XTRIM of nothing is cheap, and a worker retrying every few milliseconds must
# not turn it into a flood.
MIN_TRIM_GAP_S = 1.0

_ID_RE = re.compile(r"(\d+)(?:-(\d+))?")


@dataclass(frozen=True, order=True, slots=True)
class StreamId:
    """A stream entry id, ordered as Redis orders them."""

    ms: int
    seq: int = 0

    @classmethod
    def parse(cls, value: str | bytes) -> StreamId:
        """``"1700000000000-3"`` (or bytes, or a bare ``ms``); ValueError otherwise."""
        text = value.decode() if isinstance(value, bytes) else value
        match = _ID_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"stream id {text!r}: expected <ms>-<seq>")
        return cls(int(match.group(1)), int(match.group(2) or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


def trim_cutoff(server_now_ms: int, retention_s: int) -> StreamId:
    """The MINID below which results are older than ``retention_s``.

    An entry written exactly ``retention_s`` ago is kept (MINID keeps ids equal
    to it): "at least the retention", never less. Raises ValueError on a
    retention below 1 s or a clock before it (the cutoff would be negative).
    """
    if retention_s < 1:
        raise ValueError(f"retention_s: {retention_s!r} must be at least 1")
    cutoff_ms = server_now_ms - retention_s * 1000
    if cutoff_ms < 0:
        raise ValueError(f"server time {server_now_ms} ms: less than retention_s={retention_s} ago")
    return StreamId(cutoff_ms)


class TrimSchedule:
    """When each lane is next due for trimming, for one worker.

    Each lane when the worker starts, then about every ``every_s`` (a random
    jitter of up to a quarter of it, so that the workers of a fleet drift apart
    and do not trim the same lane at the same moment); when Redis is out of
    memory, every lane not trimmed in the last ``MIN_TRIM_GAP_S``. Times are
    the caller's monotonic seconds.
    """

    def __init__(
        self,
        lanes: tuple[int, ...],
        now_s: float,
        *,
        every_s: float = DEFAULT_TRIM_EVERY_S,
        rng: random.Random | None = None,
    ) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s: {every_s!r} must be positive")
        self.every_s = every_s
        self._rng = rng or random.Random()
        # Every lane at once when the worker starts: one restarted on a full Redis
        # frees memory first. The jitter of the later ones spreads the fleet out.
        self._due = dict.fromkeys(lanes, now_s)
        self._last = dict.fromkeys(lanes, float("-inf"))

    def due(self, now_s: float, *, is_out_of_memory: bool = False) -> list[int]:
        """Lanes to trim now."""
        if is_out_of_memory:
            return [lane for lane, last in self._last.items() if now_s - last >= MIN_TRIM_GAP_S]
        return [lane for lane, at in self._due.items() if now_s >= at]

    def trimmed(self, lane: int, now_s: float) -> None:
        """``lane`` was trimmed at ``now_s``: next due one interval (jittered) later."""
        self._last[lane] = now_s
        jitter = self._rng.uniform(-0.25, 0.25) * self.every_s
        self._due[lane] = now_s + self.every_s + jitter
