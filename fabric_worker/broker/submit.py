"""The producer's script call: enqueue batches of jobs with ``submit.lua``.

One call per lane batch, pipelined on a single server. Each job's letter in
the reply is read here: submitted by this call (or by an earlier attempt of
the same call, whose reply was lost: the stored state carries the call's
nonce), or a duplicate of a job already known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from fabric_worker.broker import scripts
from fabric_worker.broker.replication import SyncReplicaWriter
from fabric_worker.broker.transient import ReplicationShortfall
from fabric_worker.wire.keys import Keys


class BatchCancelledError(RuntimeError):
    """The batch was cancelled: it takes no new jobs."""


# One job as the script takes it: id, padded cost, header, packed tokens.
ScriptJob = tuple[str, int, bytes, bytes]

_SUBMITTED = frozenset(b"no")  # the script's letters for "enqueued by this call"


def _letters(reply: object) -> bytes:
    """The script's reply: one letter per job handled."""
    if isinstance(reply, str):
        return reply.encode()
    if not isinstance(reply, bytes):
        raise TypeError(f"submit.lua replied {type(reply).__name__}, not a string of letters")
    return reply


class Submitter:
    """Runs the submit script for one namespace on a synchronous client."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self._client = client
        self.keys = keys
        self._script = scripts.register(client, "submit")
        self._replicated: SyncReplicaWriter | None = None

    def submit(
        self,
        batches: Sequence[tuple[int, Sequence[ScriptJob]]],
        *,
        cap: int,
        nonce: str,
        replica_acks: int = 0,
        replica_ack_timeout_ms: int = 1000,
        batch: str | None = None,
    ) -> list[list[bool]]:
        """Per batch (lane, jobs), in order: for each job handled, True if it
        was enqueued by this call, False if it was a duplicate. A batch's list
        is shorter than its jobs when the backlog cap stopped it: the rest were
        not written.

        With ``replica_acks``, every script is followed by WAIT on its own
        connection; fewer replicas than that raise ReplicationShortfall (the
        caller sends the round again: the nonce makes it count once).

        Every job goes into ``batch`` (or none); a cancelled batch raises
        BatchCancelledError and takes none."""
        calls = [
            scripts.submit(self.keys, lane, jobs, cap=cap, nonce=nonce, batch=batch)
            for lane, jobs in batches
        ]
        try:
            return self._run(calls, nonce, replica_acks, replica_ack_timeout_ms)
        except ResponseError as exc:
            # A pipeline names the failed command in front of the script's words.
            _, marker, why = str(exc).partition("BATCHCANCELLED ")
            if marker:
                raise BatchCancelledError(why) from None
            raise

    def _run(
        self, calls: list[scripts.Call], nonce: str, replica_acks: int, replica_ack_timeout_ms: int
    ) -> list[list[bool]]:
        if replica_acks:
            replies = self._submit_acked(calls, replica_acks, replica_ack_timeout_ms)
        elif isinstance(self._client, RedisCluster):
            # Scripts cannot be pipelined on a cluster (each batch is one slot,
            # but a pipeline may span nodes); one round trip per batch.
            replies = [self._script(keys=c.keys, args=c.args) for c in calls]
        else:
            pipe = self._client.pipeline(transaction=False)
            for c in calls:
                self._script(keys=c.keys, args=c.args, client=pipe)
            replies = pipe.execute()
        # A letter per job (submit.lua): our own earlier write (a round whose
        # reply was lost, "o") counts as submitted like a new one ("n").
        return [[letter in _SUBMITTED for letter in _letters(reply)] for reply in replies]

    def _submit_acked(self, calls: list[scripts.Call], num: int, timeout_ms: int) -> list[Any]:
        writer = self._replicated
        if writer is None or (writer.num_replicas, writer.timeout_ms) != (num, timeout_ms):
            registered = {"submit": self._script}
            writer = self._replicated = SyncReplicaWriter(self._client, registered, num, timeout_ms)
        acked = writer.run(calls)
        if acked.num_acked < num:
            raise ReplicationShortfall(
                f"only {acked.num_acked} of {num} replica(s) acknowledged the submit "
                f"within {timeout_ms} ms"
            )
        return acked.replies
