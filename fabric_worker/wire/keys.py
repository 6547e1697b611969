"""Every Redis key of one namespace, in one place (DESIGN section 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP = "workers"  # the consumer group of every lane's jobs stream

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is usable in key names, else raise ValueError."""
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r}: use 1 to 64 characters from [A-Za-z0-9._-]")
    return namespace


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key of one namespace.

    Lane keys carry the hash tag ``{L<n>}`` so one lane lives in one cluster
    slot and each server-side script touches a single slot.
    """

    namespace: str

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    @property
    def config(self) -> str:
        return f"{self.namespace}:config"

    @property
    def workers(self) -> str:
        """Sorted set of worker names, scored by their last heartbeat."""
        return f"{self.namespace}:workers"

    def worker(self, consumer: str) -> str:
        """A worker's status hash (expires unless the worker keeps publishing)."""
        return f"{self.namespace}:worker:{consumer}"

    def _lane(self, lane: int) -> str:
        return f"{self.namespace}:{{L{lane}}}"

    def jobs(self, lane: int) -> str:
        return f"{self._lane(lane)}:jobs"

    def results(self, lane: int) -> str:
        return f"{self._lane(lane)}:results"

    def dlq(self, lane: int) -> str:
        return f"{self._lane(lane)}:dlq"

    def backlog(self, lane: int) -> str:
        return f"{self._lane(lane)}:backlog"

    def job(self, lane: int, job_id: str) -> str:
        return f"{self._lane(lane)}:job:{job_id}"

    def batch(self, lane: int, name: str) -> str:
        """A batch's record in this lane (hash: counts, created, finished)."""
        return f"{self._lane(lane)}:batch:{name}"

    def batches(self, lane: int) -> str:
        """The batches with jobs in this lane: sorted set scored by creation time."""
        return f"{self._lane(lane)}:batches"
