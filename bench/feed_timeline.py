"""Where a contender's time goes on the engine: every submit and poll, timed.

A :class:`Recorder` wraps the engine a contender drives (on whatever thread
drives it) and notes each call's start and end; :func:`summarise` turns the
notes into the figures the benchmark reports:

- ``first_submit_s``: from the contender's clock start to its first submit;
- ``busy_s``: inside ``poll`` (the engine stepping) - the rest is the driver's;
- ``gap_held_s``: between polls while the engine held work (the driver's own
  time per step: hand-offs, result writing, its loop);
- ``short_s``: time the engine ran fewer requests than it could have, while
  jobs it had not been given were still unfinished (a refill that came late);
- ``tail_s``: from the last output to the clock's end (writing the last
  results, the worker's exit).

``in_flight`` is the step curve of requests inside the engine, for the plots.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engines.contract import EngineOutput, EngineRequest


@dataclass(slots=True)
class Timeline:
    """Calls on one engine by one contender, in wall-clock seconds (time.time())."""

    submits: list[tuple[float, int]] = field(default_factory=list)  # (at, num requests)
    polls: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, outputs)
    # (at, prompt) of every request given to the engine: which job went in when
    given: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)


class Recorder:
    """An engine that notes the time of every submit and poll of ``engine``."""

    def __init__(self, engine: Any, timeline: Timeline) -> None:
        self._engine = engine
        self._timeline = timeline

    @property
    def capacity(self) -> Any:
        return self._engine.capacity

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        batch = list(requests)
        now = time.time()
        self._timeline.submits.append((now, len(batch)))
        self._timeline.given += [(now, tuple(request.prompt)) for request in batch]
        self._engine.submit(batch)

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        started = time.time()
        outputs = self._engine.poll(timeout_s)
        self._timeline.polls.append((started, time.time(), len(outputs)))
        return outputs

    def cancel(self, request_ids: Iterable[int]) -> None:
        self._engine.cancel(list(request_ids))

    def stats(self) -> Any:
        return self._engine.stats()

    def close(self) -> None:
        self._engine.close()


def in_flight(timeline: Timeline) -> list[tuple[float, int]]:
    """(time, requests inside the engine) after each submit and each poll with outputs."""
    events = [(at, n) for at, n in timeline.submits]
    events += [(end, -n) for _, end, n in timeline.polls if n]
    events.sort()
    curve, held = [], 0
    for at, delta in events:
        held += delta
        curve.append((at, held))
    return curve


def summarise(
    timeline: Timeline, *, start: float, end: float, num_jobs: int, max_running: int
) -> dict[str, float]:
    """The figures of the module docstring, in seconds, over [start, end]."""
    polls = timeline.polls
    first_submit = timeline.submits[0][0] if timeline.submits else end
    busy = sum(stop - begin for begin, stop, _ in polls)
    curve = in_flight(timeline)
    gap_held = 0.0
    for (_, prev_end, _), (next_start, _, _) in itertools.pairwise(polls):
        if _held_at(curve, prev_end) > 0:
            gap_held += max(0.0, next_start - prev_end)
    short = 0.0
    num_done = num_given = 0
    held = 0
    events = sorted(
        [(at, n, 0) for at, n in timeline.submits] + [(e, 0, n) for _, e, n in polls if n]
    )
    for (at, given, done), nxt in zip(events, [*events[1:], (end, 0, 0)], strict=True):
        num_given += given
        num_done += done
        held += given - done
        could_run = min(max_running, num_jobs - num_done)
        if held < could_run and num_given < num_jobs:
            short += max(0.0, nxt[0] - at)
    last_output = max((stop for _, stop, n in polls if n), default=end)
    wall = end - start
    return {
        "first_submit_s": round(first_submit - start, 4),
        "busy_s": round(busy, 4),
        "busy_fraction": round(busy / wall, 4) if wall > 0 else 0.0,
        "gap_held_s": round(gap_held, 4),
        "num_polls": len(polls),
        "short_s": round(short, 4),
        "tail_s": round(end - last_output, 4),
    }


def _held_at(curve: list[tuple[float, int]], at: float) -> int:
    index = bisect.bisect_right(curve, (at, float("inf")))
    return curve[index - 1][1] if index else 0
