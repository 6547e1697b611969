"""Which Redis errors are worth riding out, and a sync helper that rides them out."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis
import redis.asyncio.connection
import redis.connection
import redis.exceptions
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

T = TypeVar("T")


class ReplicationShortfall(Exception):
    """Fewer replicas acknowledged a write than the fleet config asks for
    (``replica_acks``). The write itself happened; sending it again is safe
    (the scripts dedupe), so it is retried like an outage."""


# Errors worth retrying: the server is restarting or unreachable, or a master is
# failing over or a slot moving (redis-py's cluster client retries MOVED, ASK,
# TRYAGAIN and CLUSTERDOWN itself a few times, then raises them; Sentinel's
# client raises ReadOnlyError from a master demoted under it). All of them end
# once the failover does, so they are ridden out within the outage budget.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN, "TTL exhausted"
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,  # MOVED too (a subclass)
    redis.exceptions.ReadOnlyError,
    redis.exceptions.SlotNotCoveredError,
    ConnectionError,  # the builtin: resets, refusals, broken pipes
    ReplicationShortfall,
)

# Where redis-py's own socket code lives (sync and asyncio connections).
_REDIS_CONNECTION_FILES = frozenset(
    str(Path(module.__file__).resolve())
    for module in (redis.connection, redis.asyncio.connection)
    if module.__file__
)


def is_closed_connection_bug(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py writing to a connection closed under it.

    redis-py 8.1 (the newest release) leaks AttributeError (``'NoneType' object
    has no attribute 'writelines'``) or TypeError from its socket writer instead
    of ConnectionError when a connection is closed while in use: by the peer, or
    by the cluster client's own topology refresh in another task during a
    failover (redis/redis-py#4287). Only those raised inside redis-py's
    connection code count; the same exception types from anywhere else are bugs.
    """
    if not isinstance(exc, AttributeError | TypeError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return any(str(Path(frame.filename).resolve()) in _REDIS_CONNECTION_FILES for frame in frames)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying. Refused credentials and permissions
    are not, although redis-py's AuthenticationError and AuthorizationError
    subclass ConnectionError (redis-py 8.1): retrying them only delays the real
    error by the whole retry budget."""
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return False
    return (
        isinstance(exc, TRANSIENT_ERRORS)
        or is_closed_connection_bug(exc)
        or is_unblocked_by_failover(exc)
    )


def is_unblocked_by_failover(exc: BaseException) -> bool:
    """A blocked read that the server ended because its stream moved away (a
    slot migrated: "UNBLOCKED the stream key no longer exists") or because the
    server turned replica ("UNBLOCKED force unblock ... master -> replica").
    Lanes are never deleted, so the next read, sent where the slot now lives,
    goes on (Redis 7.0 replies; redis-py raises them as plain ResponseError)."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("UNBLOCKED")


def ride_out(
    call: Callable[[], T],
    *,
    budget_s: float,
    log: Callable[[str], None] | None = None,
) -> T:
    """``call()``, retried with backoff while it raises transient errors, for at
    most ``budget_s``; then the last error is raised. For the sync tools (the
    results reader, ``top``, ``health``, the autoscaler) what the worker's
    broker does for it: a failover or restart within the budget goes unnoticed."""

    def say(state: RetryCallState) -> None:
        if log is not None and state.attempt_number == 1 and state.outcome is not None:
            exc = state.outcome.exception()
            log(f"Redis: {type(exc).__name__}: {exc}; retrying for up to {budget_s:g} s")

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
        stop=stop_after_delay(budget_s),
        before_sleep=say,
        reraise=True,
    )
    return retrying(call)
