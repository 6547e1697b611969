"""The producer's script call: enqueue batches of jobs with ``submit.lua``.

One call per lane batch, pipelined on a single server. Each job's letter in
the reply is read here: submitted by this call (or by an earlier attempt of
the same call, whose reply was lost: the stored state carries the call's
nonce), or a duplicate of a job already known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from fabric_worker.broker import scripts
from fabric_worker.broker.memory import is_out_of_memory
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
        self._is_loaded = False  # whether this client has loaded the script (see _stream)

    def submit(
        self,
        batches: Iterable[tuple[int, Sequence[ScriptJob]]],
        *,
        cap: int,
        nonce: str,
        replica_acks: int = 0,
        replica_ack_timeout_ms: int = 1000,
        batch: str | None = None,
    ) -> list[list[bool] | None]:
        """Per batch (lane, jobs), in order: for each job handled, True if it
        was enqueued by this call, False if it was a duplicate. A batch's list
        is shorter than its jobs when the backlog cap stopped it: the rest were
        not written. None for a batch Redis refused for want of memory: a
        script that adds data is refused whole, so none of it was written,
        while the batches beside it may have gone through (and must not be
        sent again: a worker may finish them meanwhile, and they would come
        back as duplicates).

        With ``replica_acks``, every script is followed by WAIT on its own
        connection; fewer replicas than that raise ReplicationShortfall (the
        caller sends the round again: the nonce makes it count once).

        Every job goes into ``batch`` (or none); a cancelled batch raises
        BatchCancelledError and takes none. ``batches`` may be lazy: each is
        built while Redis runs the script of the one before."""
        calls = (
            scripts.submit(self.keys, lane, jobs, cap=cap, nonce=nonce, batch=batch)
            for lane, jobs in batches
        )
        try:
            return self._run(calls, nonce, replica_acks, replica_ack_timeout_ms)
        except ResponseError as exc:
            # A pipeline names the failed command in front of the script's words.
            _, marker, why = str(exc).partition("BATCHCANCELLED ")
            if marker:
                raise BatchCancelledError(why) from None
            raise

    def _run(
        self,
        calls: Iterable[scripts.Call],
        nonce: str,
        replica_acks: int,
        replica_ack_timeout_ms: int,
    ) -> list[list[bool] | None]:
        if replica_acks:
            replies = self._submit_acked(list(calls), replica_acks, replica_ack_timeout_ms)
        elif isinstance(self._client, RedisCluster):
            # Scripts cannot be pipelined on a cluster (each batch is one slot,
            # but a pipeline may span nodes); one round trip per batch.
            replies = [
                _call_or_refusal(lambda c=c: self._script(keys=c.keys, args=c.args)) for c in calls
            ]
        else:
            replies = self._stream(calls)
        # A letter per job (submit.lua): our own earlier write (a round whose
        # reply was lost, "o") counts as submitted like a new one ("n").
        return [
            None if reply is None else [letter in _SUBMITTED for letter in _letters(reply)]
            for reply in replies
        ]

    def _stream(self, calls: Iterable[scripts.Call], *, is_reloaded: bool = False) -> list[Any]:
        """Pipeline the calls on one connection, each written as soon as it is
        built, so Redis runs one script while the next is packed (a redis-py
        pipeline packs them all before writing any). Replies are read in
        order once all are written; every reply is read before any error is
        raised, so the connection stays in step. A server that lost the
        script (a restart) gets it loaded and the round again: a call refused
        with NOSCRIPT wrote nothing, and the calls that ran are recognised as
        this call's own writes by the nonce."""
        if not self._is_loaded:
            # Once per client: a server without the script would otherwise cost
            # the first round twice (NOSCRIPT, then the round again).
            self._client.script_load(self._script.script)
            self._is_loaded = True
        pool = self._client.connection_pool
        connection = pool.get_connection()
        sent: list[scripts.Call] = []
        try:
            for call in calls:
                connection.send_command(
                    "EVALSHA", self._script.sha, len(call.keys), *call.keys, *call.args
                )
                sent.append(call)
            replies: list[Any] = []
            for _ in sent:
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            connection.disconnect()  # replies may be left unread on it
            raise
        finally:
            pool.release(connection)
        if not is_reloaded and any(isinstance(r, NoScriptError) for r in replies):
            self._client.script_load(self._script.script)
            return self._stream(sent, is_reloaded=True)
        for reply in replies:
            if isinstance(reply, ResponseError) and not is_out_of_memory(reply):
                raise reply
        return [None if isinstance(reply, ResponseError) else reply for reply in replies]

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


def _call_or_refusal(call: Any) -> Any:
    """The script's reply, or None where Redis refused it for want of memory."""
    try:
        return call()
    except ResponseError as exc:
        if is_out_of_memory(exc):
            return None
        raise
