"""What the rest of the project may name of redis-py, without importing it:
the client types, the errors a command line reports, and the probes the
private server launcher waits on. Only this package imports redis."""

from __future__ import annotations

import redis
import redis.asyncio

SyncRedis = redis.Redis  # a synchronous client, as :func:`.connection.connect` returns
AsyncRedis = redis.asyncio.Redis

AuthError = redis.AuthenticationError  # refused credentials (a ConnectionError in redis-py)
RefusedError = redis.ResponseError  # the server refused a command (ACL, wrong type, ...)
RedisError = redis.RedisError


def answers_ping(port: int, *, timeout_s: float = 0.5) -> bool:
    """Whether a server on 127.0.0.1:``port`` answers PING (it may be loading)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
        return False
    finally:
        client.close()


def cluster_is_ok(port: int) -> bool:
    """Whether the cluster node on 127.0.0.1:``port`` reports state ok."""
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        info = client.execute_command("CLUSTER INFO")
    finally:
        client.close()
    # redis-py parses CLUSTER INFO into a dict; older ones return the raw text.
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    return b"cluster_state:ok" in info if isinstance(info, bytes) else False
