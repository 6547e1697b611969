"""Redis connections: one place that turns a URL into a client.

Credentials come from the URL (``redis://user:pass@host:port/db``, ``rediss://``
for TLS) or from ``FABRIC_REDIS_USERNAME`` / ``FABRIC_REDIS_PASSWORD``; they are
never logged: :func:`redact` is what any output uses.

Redis Sentinel is named by ``redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]``
(``rediss+sentinel://`` for TLS to sentinels and master alike). The user info
there is the master's, as in a plain URL; the sentinels' own credentials, where
they have any, come from ``FABRIC_SENTINEL_USERNAME`` / ``FABRIC_SENTINEL_PASSWORD``.
redis-py does not parse this form, so :func:`parse_sentinel_url` does, here only.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.connection
import redis.exceptions
import redis.sentinel
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

T = TypeVar("T")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379


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
    return isinstance(exc, TRANSIENT_ERRORS) or is_closed_connection_bug(exc)


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


def _options() -> dict[str, object]:
    options: dict[str, object] = {
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 15,
    }
    username = os.environ.get("FABRIC_REDIS_USERNAME")
    password = os.environ.get("FABRIC_REDIS_PASSWORD")
    if username:
        options["username"] = username
    if password:
        options["password"] = password
    return options


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    tls: bool
    username: str | None  # the master's credentials
    password: str | None
    tls_options: tuple[tuple[str, str], ...]  # ssl_* query parameters, for both sides


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"sentinel address {item!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel address {item!r} has no valid port")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Split a Sentinel URL into sentinels, service, db and credentials.

    Raises ValueError naming what is wrong (never echoing a password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError("not a redis+sentinel:// or rediss+sentinel:// URL")
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    if not hosts:
        raise ValueError("sentinel URL names no sentinel (host:port[,host:port...])")
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("sentinel URL names no service: .../SERVICE[/DB]")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("sentinel URL path must be /SERVICE or /SERVICE/DB (DB a number)")
    tls_options = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if not name.startswith("ssl_"):
            raise ValueError(f"sentinel URL parameter {name!r} is not supported (only ssl_*)")
        tls_options.append((name, value))
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        tls=SENTINEL_SCHEMES[scheme.lower()],
        username=username,
        password=password,
        tls_options=tuple(tls_options),
    )


def _sentinel_options(
    target: SentinelTarget, options: dict[str, object]
) -> tuple[dict[str, object], dict[str, object]]:
    """Connection options for the master and for the sentinels."""
    master = dict(options)
    if target.username:
        master["username"] = target.username
    if target.password is not None:
        master["password"] = target.password
    tls: dict[str, object] = {"ssl": True, **dict(target.tls_options)} if target.tls else {}
    master.update(tls)
    sentinel: dict[str, object] = {
        key: value for key, value in options.items() if key.startswith("socket_")
    }
    sentinel.update(tls)
    if username := os.environ.get("FABRIC_SENTINEL_USERNAME"):
        sentinel["username"] = username
    if password := os.environ.get("FABRIC_SENTINEL_PASSWORD"):
        sentinel["password"] = password
    return master, sentinel


def is_cluster_url(url: str, options: dict[str, object] | None = None) -> bool:
    """Whether the server at ``url`` is a Redis Cluster node (never for Sentinel).

    Asks ``HELLO`` (its reply names the server's mode; every user may run it,
    so least-privilege users are not refused anything). An unreachable server
    is not a cluster as far as this goes: the caller's first real command then
    reports the connection error, with its retries.
    """
    if is_sentinel_url(url):
        return False
    probe = redis.Redis.from_url(url, socket_timeout=5.0, **(options or _options()))
    try:
        reply = probe.execute_command("HELLO")
    except (redis.ConnectionError, redis.ResponseError):
        return False
    finally:
        probe.close()
    if isinstance(reply, list):  # RESP2 clients see a flat list of pairs
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    mode = reply.get(b"mode", reply.get("mode", b"")) if isinstance(reply, dict) else b""
    return (mode.decode() if isinstance(mode, bytes) else str(mode)) == "cluster"


def connect(url: str, *, socket_timeout_s: float | None = 30.0) -> redis.Redis:
    """A synchronous client for ``url`` (bytes responses, hiredis parser);
    redis-py's cluster client when the server is a cluster node."""
    options = _options()
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        master, sentinel = _sentinel_options(target, options)
        manager = redis.sentinel.Sentinel(list(target.sentinels), sentinel_kwargs=sentinel)
        return manager.master_for(
            target.service, db=target.db, socket_timeout=socket_timeout_s, **master
        )
    if is_cluster_url(url, options):
        options.pop("health_check_interval", None)
        return RedisCluster.from_url(url, socket_timeout=socket_timeout_s, **options)
    return redis.Redis.from_url(url, socket_timeout=socket_timeout_s, **options)


def connect_async(url: str, *, socket_timeout_s: float | None = 30.0) -> redis.asyncio.Redis:
    """An asyncio client for ``url``; the cluster client on a cluster node."""
    options = _options()
    if is_sentinel_url(url):
        # The pool asks the sentinels for the master on every new connection, and
        # drops a connection whose server turned replica: after a failover the
        # next retry lands on the promoted master.
        target = parse_sentinel_url(url)
        master, sentinel = _sentinel_options(target, options)
        manager = redis.asyncio.sentinel.Sentinel(list(target.sentinels), sentinel_kwargs=sentinel)
        return manager.master_for(
            target.service, db=target.db, socket_timeout=socket_timeout_s, **master
        )
    if is_cluster_url(url, options):
        options.pop("health_check_interval", None)
        return AsyncRedisCluster.from_url(url, socket_timeout=socket_timeout_s, **options)
    return redis.asyncio.Redis.from_url(url, socket_timeout=socket_timeout_s, **options)


# Query parameters redis-py's from_url passes on as secrets (redis-py 8.1
# parse_url hands any unknown parameter to the connection as a keyword).
_SECRET_PARAMS = frozenset({"password", "ssl_password"})


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and tables.

    Covers ``user:pass@`` and ``:pass@`` (the last ``@`` ends the user info, so
    a password may contain ``@``) and ``password=``/``ssl_password=`` in the
    query. The host part is kept as written. A URL too malformed to split is
    not shown at all.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed Redis URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = "&".join(
        f"{pair.split('=', 1)[0]}=***"
        if unquote_plus(pair.split("=", 1)[0]).lower() in _SECRET_PARAMS
        else pair
        for pair in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
