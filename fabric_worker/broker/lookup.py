"""Looking a job up by its id: its state and, where Redis can say, its result.

A job's lane depends on its length, which the id does not tell, so every
lane's job-state key is probed: one GET per lane per job, all in one pipeline,
then one XRANGE per finished job whose state names its result entry. The
number of Redis calls per job is constant (lanes + 1), whatever the size of
the streams.

The state of a finished job is ``done``, or ``done <result entry id>`` where
the completing script records the entry; only then can the result itself be
read back by id. A state older than the retention is gone: ``unknown``. A
state that names a result entry the stream no longer holds (trimmed after the
retention while the state lived on) is ``trimmed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fabric_worker.broker import text
from fabric_worker.wire.entries import EntryError, ResultEntry, decode_result
from fabric_worker.wire.keys import Keys


@dataclass(frozen=True, slots=True)
class Lookup:
    id: str
    state: str  # queued, done, dead, trimmed or unknown
    lane: int | None = None
    result: ResultEntry | None = None


def lookup(client: Any, keys: Keys, lanes: tuple[int, ...], ids: Sequence[str]) -> list[Lookup]:
    """One Lookup per id, in order (two pipelined round trips in all)."""
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        for lane in lanes:
            pipe.get(keys.job(lane, job_id))
    states = pipe.execute()
    found: list[tuple[str, int | None, str]] = []
    for i, job_id in enumerate(ids):
        row = states[i * len(lanes) : (i + 1) * len(lanes)]
        hit = next(((lane, text(s)) for lane, s in zip(lanes, row, strict=True) if s), None)
        found.append((job_id, hit[0], hit[1]) if hit else (job_id, None, ""))
    fetch = [
        (i, lane, state.split(" ", 1)[1])
        for i, (_, lane, state) in enumerate(found)
        if lane is not None and state.startswith("done ")
    ]
    pipe = client.pipeline(transaction=False)
    for _, lane, entry_id in fetch:
        pipe.xrange(keys.results(lane), entry_id, entry_id, count=1)
    entries = dict(zip((i for i, _, _ in fetch), pipe.execute() if fetch else [], strict=True))
    out = []
    for i, (job_id, where, state) in enumerate(found):
        kind = state.split(" ", 1)[0] if state else "unknown"
        if i in entries and not entries[i]:
            kind = "trimmed"  # the state names a result the stream no longer holds
        out.append(Lookup(job_id, kind, where, _result(entries.get(i), job_id)))
    return out


def _result(reply: list[Any] | None, job_id: str) -> ResultEntry | None:
    if not reply:
        return None
    try:
        result = decode_result(reply[0][1])
    except EntryError:
        return None
    return result if result.id == job_id else None  # never another job's
