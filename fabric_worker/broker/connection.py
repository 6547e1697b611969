"""Redis connections: one place that turns a URL into a client.

Credentials come from the URL (``redis://user:pass@host:port/db``, ``rediss://``
for TLS) or from ``FABRIC_REDIS_USERNAME`` / ``FABRIC_REDIS_PASSWORD``; they are
never logged: :func:`redact` is what any output uses.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

DEFAULT_URL = "redis://127.0.0.1:6379/0"

# Connection errors worth retrying: the server is restarting or unreachable.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ConnectionResetError,
)


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


def connect(url: str, *, socket_timeout_s: float | None = 30.0) -> redis.Redis:
    """A synchronous client for ``url`` (bytes responses, hiredis parser)."""
    return redis.Redis.from_url(url, socket_timeout=socket_timeout_s, **_options())


def connect_async(url: str, *, socket_timeout_s: float | None = 30.0) -> redis.asyncio.Redis:
    """An asyncio client for ``url``."""
    return redis.asyncio.Redis.from_url(url, socket_timeout=socket_timeout_s, **_options())


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and tables."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
