"""Redis connections: one place that turns a URL into a client.

Credentials come from the URL (``redis://user:pass@host:port/db``, ``rediss://``
for TLS) or from ``FABRIC_REDIS_USERNAME`` / ``FABRIC_REDIS_PASSWORD``; they are
never logged: :func:`redact` is what any output uses.

Redis Sentinel is named by a ``redis+sentinel://`` URL (see
:mod:`.sentinel_url`): the clients then ask the sentinels for the master.
Which errors are ridden out is :mod:`.transient`'s business.
"""

from __future__ import annotations

import os
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from fabric_worker.broker.sentinel_url import is_sentinel_url, parse_sentinel_url, sentinel_options

DEFAULT_URL = "redis://127.0.0.1:6379/0"


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
        master, sentinel = sentinel_options(target, options)
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
        master, sentinel = sentinel_options(target, options)
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
