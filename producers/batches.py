"""The batch half of :class:`producers.client.FabricClient`.

A batch is a name given at submit: every new job of that submit joins it
(a job id already known stays in the batch it first came with). Each lane
counts the batch's jobs by state (total, done, dead, cancelled); a reader
sums the lanes. A batch's records expire with its results' retention once
every job is terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from fabric_worker.broker import batches
from fabric_worker.broker.batches import CancelOutcome
from fabric_worker.broker.lookup import Lookup, lookup
from fabric_worker.wire.batch_record import BatchCounts
from producers.validation import check_batch
from producers.waiting import wait_for

if TYPE_CHECKING:
    from fabric_worker.wire.fleet_config import FleetConfig
    from fabric_worker.wire.keys import Keys

T = TypeVar("T")

TERMINAL_STATES = frozenset({"done", "dead", "unknown"})  # unknown: expired, or never known


class BatchMethods:
    """Batch status, list, cancel, results, delete, and waiting (mixed into FabricClient)."""

    _redis: Any
    keys: Keys

    @property
    def config(self) -> FleetConfig:  # pragma: no cover - FabricClient's
        raise NotImplementedError

    def _retrying_call(self, call: Callable[[], T]) -> T:  # pragma: no cover - FabricClient's
        raise NotImplementedError

    def batch(self, name: str) -> BatchCounts | None:
        """The batch's counts summed over every lane; None if unknown or expired."""
        check_batch(name)
        lanes = self.config.lanes
        return self._retrying_call(lambda: batches.status(self._redis, self.keys, lanes, [name]))[0]

    def batches(self) -> list[BatchCounts]:
        """Every batch still kept, oldest first."""
        lanes = self.config.lanes
        return self._retrying_call(lambda: batches.list_batches(self._redis, self.keys, lanes))

    def cancel_batch(self, name: str) -> CancelOutcome:
        """Cancel every job of the batch not yet finished; each gets a result
        with finish_reason ``cancelled``. Returns how many this call cancelled,
        and the batch's entries it left because their header is malformed (a
        worker dead-letters each, with its reason). The batch takes no new
        jobs afterwards."""
        check_batch(name)
        lanes, retention_s = self.config.lanes, self.config.retention_s
        return batches.cancel(self._redis, self.keys, lanes, name, retention_s=retention_s)

    def batch_results(self, name: str) -> list[dict[str, Any]]:
        """Every result of the batch once, dead letters with their reasons,
        in finish order; [] for an unknown batch."""
        counts = self.batch(name)
        if counts is None:
            return []
        return batches.results(self._redis, self.keys, self.config.lanes, counts)

    def delete_batch(self, name: str) -> BatchCounts | None:
        """Remove a finished batch's records (ValueError if it is still running)."""
        check_batch(name)
        return batches.delete(self._redis, self.keys, self.config.lanes, name)

    def wait(
        self,
        ids: Sequence[str] | None = None,
        *,
        batch: str | None = None,
        timeout_s: float | None = None,
        on_poll: Callable[[Any], None] | None = None,
    ) -> Any:
        """Wait until every job of ``ids`` (or of ``batch``) is terminal.

        Returns the lookups of ``ids`` (done, dead, or unknown: expired or
        never submitted), or the batch's final counts. Raises WaitTimeout past
        ``timeout_s``, and LookupError for a batch nobody knows. Each poll
        costs lanes + 1 Redis calls per job still waited on, or one per lane
        for a batch, pipelined."""
        if (ids is None) == (batch is None):
            raise ValueError("wait takes ids or a batch, not both")
        if batch is not None:
            return self._wait_batch(batch, timeout_s, on_poll)
        lanes = self.config.lanes
        known: dict[str, Lookup] = {}

        def poll() -> list[Lookup]:
            waiting = [i for i in dict.fromkeys(ids or ()) if i not in known]
            found = self._retrying_call(lambda: lookup(self._redis, self.keys, lanes, waiting))
            known.update((f.id, f) for f in found if f.state in TERMINAL_STATES)
            latest = {f.id: f for f in found}
            return [known.get(i) or latest[i] for i in ids or ()]

        return wait_for(
            poll,
            lambda seen: all(f.state in TERMINAL_STATES for f in seen),
            timeout_s=timeout_s,
            what=f"{len(ids or ())} job(s)",
            on_poll=on_poll,
        )

    def _wait_batch(
        self, name: str, timeout_s: float | None, on_poll: Callable[[Any], None] | None
    ) -> BatchCounts:
        def poll() -> BatchCounts:
            counts = self.batch(name)
            if counts is None:
                raise LookupError(f"batch {name!r} is not known (never made, expired or deleted)")
            return counts

        counts: BatchCounts = wait_for(
            poll,
            lambda c: c.is_finished,
            timeout_s=timeout_s,
            what=f"batch {name!r}",
            on_poll=on_poll,
        )
        return counts
