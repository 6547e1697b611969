"""What a worker holds and what it hands back to Redis, as plain data.

A :class:`Claimed` entry is what a read, a reclaim or an adoption delivered;
the others are what the core decided about entries, for the broker to carry
out in one batched call each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claimed:
    """An entry this worker now holds (pending under its consumer name)."""

    lane: int
    entry_id: bytes
    fields: dict[bytes, bytes]  # empty if the entry was deleted while pending
    deliveries: int


@dataclass(frozen=True, slots=True)
class Completion:
    """One result to write with the complete script."""

    lane: int
    entry_id: bytes
    job_id: str
    cost_tokens: int
    header: bytes
    tokens: bytes
    batch: str | None = None  # its batch's counts move with it


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry to move to its lane's dead-letter stream, and why."""

    lane: int
    entry_id: bytes
    job_id: str | None  # None when the header does not give one
    cost_tokens: int  # 0 when unknown: nothing is released from the backlog
    reason: str
    deliveries: int
    error: str = ""
    batch: str | None = None  # its batch counts it dead


@dataclass(frozen=True, slots=True)
class HandBack:
    """An unstarted entry to put back at the tail of its lane for anyone to take."""

    lane: int
    entry_id: bytes
    job_id: str | None


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt to let go of, so that the next reclaim retries it."""

    lane: int
    entry_id: bytes
    idle_ms: int
