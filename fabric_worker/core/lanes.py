"""Lane choice for the ingress loop: which lane's stream to read next.

A lane is a prompt-length class (DESIGN section 4). Reading one lane for as long as it has
work keeps the engine's batches shape-pure (similar prompt lengths pad, schedule and cache
alike); switching by backlog pressure serves the busiest lane next; the age bound makes sure
that no lane with work starves while a heavy lane stays full.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """Tuning of :class:`LaneChooser`.

    ``max_wait_s``: the longest a lane with work may wait while other lanes are served.
    ``max_tps``: trade latency for throughput. The only thing it changes is the age bound,
    which becomes ``max_wait_s * max_tps_wait_factor``: the chooser stays on a lane that has
    work that much longer, so runs (and the engine's batches) stay shape-pure longer, at the
    price of a longer worst-case wait for the other lanes.
    """

    max_wait_s: float = 2.0
    max_tps: bool = False
    max_tps_wait_factor: float = 4.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_wait_s) and self.max_wait_s > 0):
            raise ValueError(f"max_wait_s must be finite and > 0, got {self.max_wait_s!r}")
        if not (math.isfinite(self.max_tps_wait_factor) and self.max_tps_wait_factor >= 1):
            raise ValueError(
                f"max_tps_wait_factor must be finite and >= 1, got {self.max_tps_wait_factor!r}"
            )

    @property
    def age_bound_s(self) -> float:
        """The wait after which a lane with work is served next, whatever the others hold."""
        if self.max_tps:
            return self.max_wait_s * self.max_tps_wait_factor
        return self.max_wait_s


def _check_lanes(lanes: Sequence[int]) -> tuple[int, ...]:
    if not lanes:
        raise ValueError("lanes must not be empty")
    ordered = tuple(sorted(lanes))
    if ordered[0] < 1:
        raise ValueError(f"lanes must be >= 1, got {ordered[0]!r}")
    for smaller, larger in itertools.pairwise(ordered):
        if smaller == larger:
            raise ValueError(f"lanes must be distinct, got {smaller!r} twice")
    return ordered


class LaneChooser:
    """Chooses the lane the ingress reads next. Pure: time comes in as ``now_s``.

    Rules, in order, at each ``choose``:
    1. Age bound: if a lane with work has waited ``policy.age_bound_s`` or longer while
       others were served, choose the one that has waited longest (ties: the smaller lane).
    2. Stickiness: stay on the current lane while it has work.
    3. Pressure: otherwise choose the lane with the most backlog tokens (ties: the one
       waiting longest, then the smaller lane).
    4. None if no lane has work; the current lane is kept for when work returns.

    A lane starts waiting when it is first seen with work while not being served (or when
    it is switched away from with work left); its wait ends when it is chosen or seen empty.
    """

    __slots__ = ("_current", "_lanes", "_last_now_s", "_policy", "_waiting_since_s")

    def __init__(self, lanes: Sequence[int], policy: LanePolicy) -> None:
        self._lanes = _check_lanes(lanes)
        self._policy = policy
        self._current: int | None = None
        self._waiting_since_s: dict[int, float] = {}
        self._last_now_s = -math.inf

    @property
    def lanes(self) -> tuple[int, ...]:
        """The lane boundaries, ascending."""
        return self._lanes

    @property
    def policy(self) -> LanePolicy:
        return self._policy

    @property
    def current(self) -> int | None:
        """The lane last chosen; None before the first choice."""
        return self._current

    def wait_s(self, lane: int, now_s: float) -> float:
        """How long ``lane`` has waited with work while not served, as of ``now_s``."""
        since_s = self._waiting_since_s.get(lane)
        return 0.0 if since_s is None else max(0.0, now_s - since_s)

    def choose(self, now_s: float, backlog_tokens: Mapping[int, int]) -> int | None:
        """The lane to read next, or None if every backlog is 0.

        ``backlog_tokens`` maps lanes to tokens ready to read there; absent lanes have none.
        Raises ValueError for an unknown lane, a negative backlog, or ``now_s`` earlier than
        in the previous call.
        """
        if now_s < self._last_now_s:
            raise ValueError(f"now_s went backwards: {now_s!r} < {self._last_now_s!r}")
        self._last_now_s = now_s
        backlog = self._full_backlog(backlog_tokens)
        self._update_waits(now_s, backlog)
        lane = self._pick(now_s, backlog)
        if lane is not None and lane != self._current:
            previous = self._current
            if previous is not None and backlog[previous] > 0:
                self._waiting_since_s[previous] = now_s
            self._waiting_since_s.pop(lane, None)
            self._current = lane
        return lane

    def _full_backlog(self, backlog_tokens: Mapping[int, int]) -> dict[int, int]:
        backlog = dict.fromkeys(self._lanes, 0)
        for lane, tokens in backlog_tokens.items():
            if lane not in backlog:
                raise ValueError(f"unknown lane {lane!r}; lanes are {self._lanes}")
            if tokens < 0:
                raise ValueError(f"backlog_tokens[{lane}] must be >= 0, got {tokens!r}")
            backlog[lane] = tokens
        return backlog

    def _update_waits(self, now_s: float, backlog: Mapping[int, int]) -> None:
        for lane, tokens in backlog.items():
            if tokens == 0:
                self._waiting_since_s.pop(lane, None)
            elif lane != self._current:
                self._waiting_since_s.setdefault(lane, now_s)

    def _pick(self, now_s: float, backlog: Mapping[int, int]) -> int | None:
        waits = self._waiting_since_s
        age_bound_s = self._policy.age_bound_s
        overdue = [lane for lane, since_s in waits.items() if now_s - since_s >= age_bound_s]
        if overdue:
            return min(overdue, key=lambda lane: (waits[lane], lane))
        if self._current is not None and backlog[self._current] > 0:
            return self._current
        with_work = [lane for lane in self._lanes if backlog[lane] > 0]
        if not with_work:
            return None
        return min(with_work, key=lambda lane: (-backlog[lane], waits.get(lane, now_s), lane))
