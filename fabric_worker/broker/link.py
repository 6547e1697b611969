"""One worker's async link to Redis: outage retry and batched round trips.

Every call goes through :meth:`Link.call`, which retries transient Redis
errors with backoff (tenacity) for at most ``outage_budget_s`` and then raises
:class:`BrokerLost`: a worker holds its in-flight work through a short outage
and fails fast past the budget. :meth:`Link.each` sends many commands or
script calls in one round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from fabric_worker.broker.memory import is_out_of_memory
from fabric_worker.broker.scripts import Call, register
from fabric_worker.broker.transient import is_transient

T = TypeVar("T")
CLUSTER_CONCURRENCY = 16  # commands in flight at once on a cluster (see Link.each)
SCRIPTS = ("complete", "deadletter", "renew", "requeue", "retry")


class BrokerLost(RuntimeError):
    """Redis stayed unreachable for the whole outage budget (exit 4)."""


def command(name: str, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """One command, to be called on whatever client :meth:`Link.each` hands it."""
    return lambda client: getattr(client, name)(*args, **kwargs)


def _retryable(exc: BaseException) -> bool:
    """Transient errors, and Redis out of memory: the scripts that add data are
    refused whole then (no ``allow-oom`` flag), so sending them again once
    memory is freed writes each result once."""
    return is_transient(exc) or is_out_of_memory(exc)


class Link:
    """An async client with the worker's retry policy and its scripts."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        outage_budget_s: float,
        log: Callable[[str], None],
    ) -> None:
        self.redis = client
        self.outage_budget_s = outage_budget_s
        self.log = log
        self.num_retries = 0
        self.num_recoveries = 0  # calls that succeeded after a transient failure
        self.out_of_memory = False  # a call is waiting for Redis to free memory
        self._last_retry_log_s = -1e9
        self.is_cluster = isinstance(client, AsyncRedisCluster)
        self.registered = {name: register(client, name) for name in SCRIPTS}

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        # The fast path first: building tenacity's machinery on every call costs
        # as much as the call itself, and almost every call succeeds.
        try:
            return await make()
        except redis.AuthenticationError as exc:  # a ConnectionError, but not transient
            raise BrokerLost(f"Redis refused the credentials: {exc}") from exc
        except Exception as exc:
            if not _retryable(exc):
                raise
            self._note_retry(exc)
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
            stop=stop_after_delay(self.outage_budget_s),
            before_sleep=self._count_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await make()
                    # A reply may have been lost on the way: see Broker.own_pending().
                    self.num_recoveries += 1
                    self.out_of_memory = False
                    return result
        except RetryError as exc:  # retried past the outage budget
            last = exc.last_attempt.exception()
            what = "out of memory" if last is not None and is_out_of_memory(last) else "unreachable"
            raise BrokerLost(f"Redis {what} for {self.outage_budget_s:g} s: {last}") from exc
        except redis.AuthenticationError as exc:
            raise BrokerLost(f"Redis refused the credentials: {exc}") from exc
        # Anything else was not retryable (tenacity re-raises it as it is): it
        # propagates unchanged.
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: Any) -> None:
        self._note_retry(state.outcome.exception() if state.outcome else None)

    def _note_retry(self, exc: BaseException | None) -> None:
        self.num_retries += 1
        if exc is not None and is_out_of_memory(exc):
            self.out_of_memory = True  # the worker stops claiming meanwhile
        now = time.monotonic()
        if now - self._last_retry_log_s >= 5.0:  # say so, but not on every attempt
            self._last_retry_log_s = now
            self.log(f"broker: {type(exc).__name__}: {exc}; retrying with backoff")

    async def each(self, calls: Sequence[Callable[[Any], Any]]) -> list[Any]:
        """Run ``calls`` (each given a client to call on) in one round trip.

        Pipelined on a single server; concurrently on a cluster, where a
        pipeline may span nodes and cannot carry scripts. A fresh pipeline per
        attempt: a failed execute() empties its stack.
        """
        if not calls:
            return []
        if self.is_cluster:
            # Each concurrent command holds a connection of its node, and the
            # cluster client caps them (100 per node): go in bounded waves.
            results: list[Any] = []
            for i in range(0, len(calls), CLUSTER_CONCURRENCY):
                wave = calls[i : i + CLUSTER_CONCURRENCY]
                results += await asyncio.gather(*(call(self.redis) for call in wave))
            return results
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                call(pipe)
            try:
                return await pipe.execute()  # type: ignore[no-any-return]
            except redis.exceptions.NoScriptError:
                # The server lost its scripts (a restart without persistence of
                # them): load them again and resend; every script is idempotent.
                if attempt:
                    raise
                for script in self.registered.values():
                    script.sha = await self.redis.script_load(script.script)
        raise AssertionError("unreachable")  # pragma: no cover

    def script(self, call: Call) -> Callable[[Any], Any]:
        """A script call for :meth:`each`. On a pipeline it is a bare EVALSHA:
        redis-py's Script would make every pipeline ask SCRIPT EXISTS first, one
        more round trip per batch; :meth:`each` reloads on NOSCRIPT instead."""
        script = self.registered[call.script]

        def run(client: Any) -> Any:
            if self.is_cluster:
                return script(keys=call.keys, args=call.args, client=client)
            return client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)

        return run

    async def scripts(self, calls: Sequence[Call]) -> list[Any]:
        """Run script calls in one round trip, riding out an outage. Safe to
        resend after a lost reply: every script is idempotent."""
        runs = [self.script(c) for c in calls]
        return await self.call(lambda: self.each(runs)) if runs else []
