"""Batches: read their counts, list, cancel, read back their results, delete.

Each lane keeps its own record of a batch (``Keys.batch``), moved by the
scripts that change a job's state; here the lanes are read in one pipeline
and summed (:func:`fabric_worker.wire.batch_record.sum_lanes`). A cancel
marks every lane first, so no late job slips in, then scans each lane's jobs
stream (only unfinished entries are there) and runs ``cancel.lua`` on the
batch's entries, a chunk at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from fabric_worker.broker import scripts, text
from fabric_worker.broker.dlq import parse_dead_letter
from fabric_worker.core.retention import StreamId
from fabric_worker.wire.batch_record import BatchCounts, lane_counts, sum_lanes
from fabric_worker.wire.entries import (
    EntryError,
    ResultEntry,
    decode_result,
    encode_result,
    peek_header,
    result_json,
)
from fabric_worker.wire.keys import Keys
from fabric_worker.wire.replies import CancelReply

CHUNK = 500  # entries read and cancelled per call: bounded work per script


def _records(client: Any, keys: Keys, lanes: Sequence[int], names: Sequence[str]) -> list[Any]:
    """HGETALL of every (batch, lane) record, batch-major, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        for lane in lanes:
            pipe.hgetall(keys.batch(lane, name))
    return list(pipe.execute()) if names else []


def status(
    client: Any, keys: Keys, lanes: Sequence[int], names: Sequence[str]
) -> list[BatchCounts | None]:
    """Each batch's counts summed over ``lanes`` (None: unknown or expired);
    one HGETALL per lane per batch, in one pipeline."""
    raw = _records(client, keys, lanes, names)
    out = []
    for i, name in enumerate(names):
        row = raw[i * len(lanes) : (i + 1) * len(lanes)]
        out.append(sum_lanes(name, (lane_counts(name, r) for r in row)))
    return out


def list_batches(client: Any, keys: Keys, lanes: Sequence[int]) -> list[BatchCounts]:
    """Every batch whose records are still kept, oldest first.

    A lane's index still names a batch whose record there expired: those
    names are dropped from the index on the way (where this user may; a
    reader only reads)."""
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.zrange(keys.batches(lane), 0, -1, withscores=True)
    created: dict[str, float] = {}
    indexed: set[tuple[str, int]] = set()
    for lane, reply in zip(lanes, pipe.execute(), strict=True):
        for member, score in reply:
            name = text(member)
            created[name] = min(score, created.get(name, score))
            indexed.add((name, lane))
    names = sorted(created, key=lambda n: (created[n], n))
    raw = _records(client, keys, lanes, names)
    out = []
    stale = []
    for i, name in enumerate(names):
        row = raw[i * len(lanes) : (i + 1) * len(lanes)]
        stale += [(name, lane) for lane, r in zip(lanes, row, strict=True) if not r]
        counts = sum_lanes(name, (lane_counts(name, r) for r in row))
        if counts is not None:
            out.append(counts)
    _forget(client, keys, [(n, lane) for n, lane in stale if (n, lane) in indexed])
    return out


def _forget(client: Any, keys: Keys, stale: list[tuple[str, int]]) -> None:
    if not stale:
        return
    pipe = client.pipeline(transaction=False)
    for name, lane in stale:
        pipe.zrem(keys.batches(lane), name)
    with contextlib.suppress(NoPermissionError):  # a reader: a producer's list drops them
        pipe.execute()


def _run(client: Any, script: Any, calls: list[scripts.Call]) -> list[Any]:
    if isinstance(client, RedisCluster):  # scripts are not pipelined on a cluster
        return [script(keys=c.keys, args=c.args) for c in calls]
    pipe = client.pipeline(transaction=False)
    for c in calls:
        script(keys=c.keys, args=c.args, client=pipe)
    return list(pipe.execute())


def _cancelled_header(header: dict[str, Any], name: str, now_unix: float) -> bytes:
    submitted = header.get("submitted_at", 0.0)
    submitted_at = float(submitted) if isinstance(submitted, int | float) else 0.0
    result = ResultEntry(
        id=str(header["id"]),
        tokens=[],
        finish_reason="cancelled",
        deliveries=0,
        worker="",
        submitted_at=submitted_at,
        started_at=now_unix,
        finished_at=now_unix,
        error="batch cancelled",
        batch=name,
    )
    return encode_result(result)["h"]


@dataclass(frozen=True, slots=True)
class MalformedEntry:
    """An entry of the batch that a cancel left queued: its header does not
    say enough to settle it (a worker that reads it dead-letters it)."""

    lane: int
    entry_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """What one cancel did: the jobs it cancelled, and the entries it left."""

    num_cancelled: int = 0
    malformed: tuple[MalformedEntry, ...] = ()


def _cost(lane: int, header: dict[str, Any]) -> int | None:
    """The job's padded cost by its header; None where the header gives none."""
    max_new = header.get("max_new_tokens")
    if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1:
        return None
    return lane + max_new


def cancel(
    client: Any, keys: Keys, lanes: Sequence[int], name: str, *, retention_s: int
) -> CancelOutcome:
    """Cancel the batch's unfinished jobs: how many this call cancelled, and
    the batch's entries it could not settle for a malformed header.

    Every lane is marked first (submit refuses the batch from then on), so a
    job that got in before its lane was marked is still in the stream when
    the scan reaches it."""
    script = scripts.register(client, "cancel")
    marks = [scripts.cancel(keys, lane, name, [], retention_s=retention_s) for lane in lanes]
    _run(client, script, marks)
    num_cancelled = 0
    malformed: list[MalformedEntry] = []
    for lane in lanes:
        for page in _pages(client, keys.jobs(lane), 0):
            now = time.time()
            jobs = []
            for entry_id, fields in page:
                header = peek_header(fields)
                if header.get("batch") != name:
                    continue
                if not isinstance(header.get("id"), str):
                    malformed.append(MalformedEntry(lane, entry_id, "its header has no job id"))
                    continue
                cost = _cost(lane, header)
                jobs.append((entry_id, header["id"], cost, _cancelled_header(header, name, now)))
            if jobs:
                call = scripts.cancel(keys, lane, name, jobs, retention_s=retention_s)
                replies = scripts.cancel_replies(_run(client, script, [call])[0])
                for (entry_id, *_), reply in zip(jobs, replies, strict=True):
                    num_cancelled += reply is CancelReply.CANCELLED
                    if reply is CancelReply.MALFORMED:
                        why = "its header has no valid max_new_tokens"
                        malformed.append(MalformedEntry(lane, entry_id, why))
    return CancelOutcome(num_cancelled, tuple(malformed))


def delete(client: Any, keys: Keys, lanes: Sequence[int], name: str) -> BatchCounts | None:
    """Remove a finished batch's records and index entries (its results stay
    until their retention). Raises ValueError for a batch still running."""
    (counts,) = status(client, keys, lanes, [name])
    if counts is None:
        return None
    if not counts.is_finished:
        raise ValueError(
            f"batch {name!r} has {counts.num_left} job(s) still queued or running; "
            "wait for it or cancel it first"
        )
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.delete(keys.batch(lane, name))
        pipe.zrem(keys.batches(lane), name)
    pipe.execute()
    return counts


def _pages(client: Any, stream: str, since_ms: int) -> Iterator[list[tuple[str, Any]]]:
    """The stream from ``since_ms`` on, CHUNK entries per XRANGE."""
    start = f"{since_ms}-0"
    while True:
        page = client.xrange(stream, start, "+", count=CHUNK)
        if not page:
            return
        yield [(text(entry_id), fields) for entry_id, fields in page]
        start = "(" + text(page[-1][0])


def _scan(client: Any, stream: str, since_ms: int) -> Iterator[tuple[str, dict[Any, Any]]]:
    for page in _pages(client, stream, since_ms):
        yield from page


def _order(entry_id: str, finished_at: float | None) -> tuple[int, float, int]:
    """Finish order: when Redis wrote the entry (ms; one clock for every lane),
    ties within a millisecond broken by the finish time the writer gave."""
    sid = StreamId.parse(entry_id)
    return sid.ms, finished_at or 0.0, sid.seq


def results(
    client: Any, keys: Keys, lanes: Sequence[int], counts: BatchCounts
) -> list[dict[str, Any]]:
    """Every result of the batch once, dead letters included with their
    reasons, in finish order (the time each was written; lanes merged).

    Read from each lane's results and dead-letter streams from the batch's
    creation time, kept where the header names the batch."""
    since_ms = int((counts.created or 0) * 1000)
    found: list[tuple[tuple[int, float, int], dict[str, Any]]] = []
    seen: set[str] = set()
    for lane in lanes:
        for entry_id, fields in _scan(client, keys.results(lane), since_ms):
            if peek_header(fields).get("batch") != counts.name:
                continue
            try:
                result = decode_result(fields)
            except EntryError:
                continue
            if result.id not in seen:
                seen.add(result.id)
                # A user's cancel is a result too, told apart by its finish reason.
                state = "cancelled" if result.finish_reason == "cancelled" else "done"
                doc = {**result_json(result), "state": state, "lane": lane}
                found.append((_order(entry_id, result.finished_at), doc))
    dead: list[tuple[tuple[int, float, int], dict[str, Any]]] = []
    for lane in lanes:
        for entry_id, fields in _scan(client, keys.dlq(lane), since_ms):
            letter = parse_dead_letter(lane, entry_id, fields)
            if letter.batch != counts.name or letter.job_id is None or letter.job_id in seen:
                continue
            seen.add(letter.job_id)
            doc = {
                "id": letter.job_id,
                "state": "dead",
                "lane": lane,
                "batch": counts.name,
                "reason": letter.reason,
                "error": letter.error,
                "deliveries": letter.deliveries,
                "failed_at": letter.failed_at,
            }
            dead.append((_order(entry_id, letter.failed_at), doc))
    return [doc for _, doc in sorted(found + dead, key=lambda item: item[0])]
