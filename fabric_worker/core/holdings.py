"""What one worker holds: every entry pending under its consumer name.

Pure bookkeeping. An entry is held from the moment it is claimed until its
result is written, it is dead-lettered, handed back, or its lease is lost; the
lease renewer heartbeats exactly these entries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from fabric_worker.core.lifecycle import JobEvent, JobState, job_transition
from fabric_worker.wire.entries import JobEntry


@dataclass(slots=True)
class Held:
    """One claimed entry and where it is in this worker."""

    lane: int
    entry_id: bytes
    job: JobEntry
    cost_tokens: int  # padded: what the lane's backlog holds for it
    budget_tokens: int  # what it reserves in the engine's token budget
    deliveries: int
    claimed_at: float  # unix seconds, reported as the result's started_at
    state: JobState = JobState.CLAIMED
    request_id: int | None = None

    @property
    def key(self) -> tuple[int, bytes]:
        return (self.lane, self.entry_id)

    def step(self, event: JobEvent) -> None:
        self.state = job_transition(self.state, event)


EntryKey = tuple[int, bytes]  # (lane, entry id): ids are unique per stream only


class Holdings:
    """Held entries by (lane, entry id), and the running ones by engine request id."""

    def __init__(self) -> None:
        self._by_entry: dict[EntryKey, Held] = {}
        self._by_request: dict[int, Held] = {}

    def __len__(self) -> int:
        return len(self._by_entry)

    def __contains__(self, key: EntryKey) -> bool:
        return key in self._by_entry

    def get(self, key: EntryKey) -> Held | None:
        return self._by_entry.get(key)

    def add(self, held: Held) -> None:
        if held.key in self._by_entry:
            raise ValueError(f"entry {held.key!r} is already held")
        self._by_entry[held.key] = held

    def start(self, held: Held, request_id: int) -> None:
        """The entry went into the engine as ``request_id``."""
        held.step(JobEvent.ADMITTED)
        held.request_id = request_id
        self._by_request[request_id] = held

    def finish(self, request_id: int) -> Held | None:
        """The engine returned ``request_id``: the caller steps its state."""
        return self._by_request.pop(request_id, None)

    def lose(self, held: Held) -> None:
        """The lease on this entry was lost. A running one stays findable by its
        request id until the engine returns it (cancelled), to free its budget."""
        held.step(JobEvent.LEASE_LOST)
        self._by_entry.pop(held.key, None)

    def drop(self, held: Held, event: JobEvent) -> None:
        """The entry leaves this worker by ``event`` (a terminal step)."""
        held.step(event)
        self._by_entry.pop(held.key, None)

    @property
    def num_in_engine(self) -> int:
        """Requests handed to the engine and not yet returned (lost ones too)."""
        return len(self._by_request)

    def running(self) -> list[Held]:
        return list(self._by_request.values())

    def ids_by_lane(self) -> dict[int, list[bytes]]:
        lanes: dict[int, list[bytes]] = defaultdict(list)
        for held in self._by_entry.values():
            lanes[held.lane].append(held.entry_id)
        return lanes
