"""Dead letters: list them, replay them after a fix, purge them.

A dead letter (written by ``deadletter.lua``) keeps the original ``h`` and
``t`` byte for byte plus ``reason``, ``deliveries``, ``error``, ``worker``,
``entry`` (the original entry id) and ``failed_at``. Replaying one puts the
original job back on its lane as if it had just been submitted: one script
per entry (``replay.lua``), so a crash mid-way never leaves a job both queued
and dead, or counted twice in the backlog.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import redis

from fabric_worker.broker import scripts, text
from fabric_worker.wire.entries import is_valid_batch, is_valid_id, peek_header
from fabric_worker.wire.keys import Keys
from fabric_worker.wire.replies import ReplayReply

PAGE_SIZE = 500


def _get(fields: Mapping[Any, Any], name: str) -> Any:
    return fields.get(name.encode(), fields.get(name))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as an operator sees it.

    ``job_id`` is None when the header does not parse. ``cost_tokens`` is the
    padded cost a replay adds to the lane's backlog (lane + max_new_tokens),
    None when the header does not say: such an entry is not replayable.
    """

    lane: int
    entry_id: str
    job_id: str | None
    reason: str
    deliveries: int | None
    error: str
    worker: str
    failed_at: float | None
    original_entry: str
    cost_tokens: int | None
    batch: str | None = None

    @property
    def is_replayable(self) -> bool:
        return self.job_id is not None and self.cost_tokens is not None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["replayable"] = self.is_replayable
        return doc


def _number(raw: object, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text(raw))
    except (TypeError, ValueError):
        return None


def parse_dead_letter(lane: int, entry_id: bytes | str, fields: Mapping[Any, Any]) -> DeadLetter:
    """A dead-letter entry as a :class:`DeadLetter`; tolerant of any field
    being missing or malformed (this is where malformed entries end up)."""
    header = peek_header(fields)
    job_id = header.get("id")
    if not isinstance(job_id, str) or not is_valid_id(job_id):
        job_id = None
    max_new = header.get("max_new_tokens")
    cost_tokens = None
    if isinstance(max_new, int) and not isinstance(max_new, bool) and max_new >= 1:
        cost_tokens = lane + max_new
    return DeadLetter(
        lane=lane,
        entry_id=text(entry_id),
        job_id=job_id,
        reason=text(_get(fields, "reason") or ""),
        deliveries=_number(_get(fields, "deliveries"), int),
        error=text(_get(fields, "error") or ""),
        worker=text(_get(fields, "worker") or ""),
        failed_at=_number(_get(fields, "failed_at"), float),
        original_entry=text(_get(fields, "entry") or ""),
        cost_tokens=cost_tokens,
        batch=header["batch"] if is_valid_batch(header.get("batch")) else None,
    )


def count_dead_letters(client: redis.Redis, keys: Keys, lanes: Sequence[int]) -> dict[int, int]:
    """Dead letters per lane, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.xlen(keys.dlq(lane))
    return {lane: int(n) for lane, n in zip(lanes, pipe.execute(), strict=True)}


def iter_dead_letters(
    client: redis.Redis, keys: Keys, lanes: Sequence[int], *, page_size: int = PAGE_SIZE
) -> Iterator[DeadLetter]:
    """Every dead letter of ``lanes``, lane by lane, oldest first, read a page
    at a time. Safe to delete what was yielded while iterating: each page
    starts after the last id seen."""
    for lane in lanes:
        start = "-"
        while True:
            entries = client.xrange(keys.dlq(lane), min=start, count=page_size)
            for entry_id, fields in entries:
                yield parse_dead_letter(lane, entry_id, fields)
            if len(entries) < page_size:
                break
            start = "(" + text(entries[-1][0])


class ReplayOutcome(StrEnum):
    """What a replay did with one dead letter."""

    REPLAYED = "replayed"  # back on its lane, dead letter deleted
    NOT_REPLAYABLE = "not replayable"  # header does not parse; kept (use force)
    GONE = "gone"  # deleted or replayed by someone else meanwhile
    DONE = "already done"  # the job has a result; kept
    QUEUED = "already queued"  # the job was submitted again; kept


_SCRIPT_OUTCOMES = {
    ReplayReply.REPLAYED: ReplayOutcome.REPLAYED,
    ReplayReply.GONE: ReplayOutcome.GONE,
    ReplayReply.DONE: ReplayOutcome.DONE,
    ReplayReply.QUEUED: ReplayOutcome.QUEUED,
}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    letter: DeadLetter
    outcome: ReplayOutcome
    detail: str = ""  # the new entry id, or the job state that stopped it


class DeadLetters:
    """Replay and purge dead letters of one namespace."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._replay = scripts.register(client, "replay")

    def replay(self, letter: DeadLetter, *, force: bool = False) -> ReplayResult:
        """Re-enqueue ``letter``'s original job (see ``replay.lua``).

        An entry whose header does not parse is kept unless ``force``: then it
        goes back with no job state and no backlog cost, as a hand-written
        entry would, and a worker will most likely dead-letter it again.
        """
        if not letter.is_replayable and not force:
            return ReplayResult(letter, ReplayOutcome.NOT_REPLAYABLE)
        call = scripts.replay(
            self.keys,
            letter.lane,
            letter.entry_id,
            job_id=letter.job_id,
            cost_tokens=letter.cost_tokens or 0,
            batch=letter.batch,
        )
        reply, detail = scripts.replay_reply(self._replay(keys=call.keys, args=call.args))
        return ReplayResult(letter, _SCRIPT_OUTCOMES[reply], detail)

    def purge(self, letters: Sequence[DeadLetter]) -> list[bool]:
        """Delete ``letters``; False for each that was already gone. Job states
        stay ``dead`` (until retention) so a resubmit of the id is still deduped."""
        if not letters:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for letter in letters:
            pipe.xdel(self.keys.dlq(letter.lane), letter.entry_id)
        return [bool(n) for n in pipe.execute()]


def _when(failed_at: float | None) -> str:
    if failed_at is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(failed_at))


def format_dead_letters(letters: list[DeadLetter]) -> str:
    """A table, one row per dead letter; the error column is not padded."""
    rows = [("lane", "entry", "job", "deliveries", "failed_at", "worker", "reason", "error")]
    for d in letters:
        rows.append(
            (
                str(d.lane),
                d.entry_id,
                d.job_id if d.job_id is not None else "-",
                "-" if d.deliveries is None else str(d.deliveries),
                _when(d.failed_at),
                d.worker or "-",
                d.reason or "-",
                d.error.replace("\n", " ") or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows
    )
