"""``redis+sentinel://`` URLs, parsed here only (redis-py does not parse them).

``redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]``, and
``rediss+sentinel://`` for TLS to sentinels and master alike (``ssl_*`` query
parameters apply to both). The user info is the master's, as in a plain URL;
the sentinels' own credentials, where they have any, come from
``FABRIC_SENTINEL_USERNAME`` / ``FABRIC_SENTINEL_PASSWORD``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379


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


def sentinel_options(
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
