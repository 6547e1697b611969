"""Connection URLs and the transient-error rule, with no server."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.exceptions
import redis.sentinel

from fabric_worker.broker.connection import connect, connect_async, redact
from fabric_worker.broker.sentinel_url import (
    SentinelTarget,
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_options,
)
from fabric_worker.broker.transient import is_closed_connection_bug, is_transient


def test_sentinel_url_with_every_part() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://worker:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel-c/fleet/3"
    )
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("::1", 26380), ("sentinel-c", 26379)),
        service="fleet",
        db=3,
        tls=False,
        username="worker",
        password="p@ss",
        tls_options=(),
    )


def test_sentinel_url_minimal_and_tls() -> None:
    assert parse_sentinel_url("redis+sentinel://h:1/svc") == SentinelTarget(
        (("h", 1),), "svc", 0, False, None, None, ()
    )
    target = parse_sentinel_url(
        "rediss+sentinel://:secret@h:1/svc?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required"
    )
    assert target.tls and target.username is None and target.password == "secret"
    assert target.tls_options == (("ssl_ca_certs", "/ca.pem"), ("ssl_cert_reqs", "required"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:1/0", r"not a redis\+sentinel"),
        ("redis+sentinel:///svc", "names no sentinel"),
        ("redis+sentinel://h:1", "names no service"),
        ("redis+sentinel://h:1/", "names no service"),
        ("redis+sentinel://h:1/svc/x", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://h:1/svc/0/extra", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://h:99999/svc", "no valid port"),
        ("redis+sentinel://h:port/svc", "no valid port"),
        ("redis+sentinel://:1/svc", "has no host"),
        ("redis+sentinel://h:1/svc?socket_timeout=1", "only ssl_"),
    ],
)
def test_bad_sentinel_urls_are_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_a_refused_sentinel_url_never_shows_its_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_sentinel_url("redis+sentinel://u:hunter2@h:1/svc/x")
    assert "hunter2" not in str(info.value)
    assert (
        redact("redis+sentinel://u:hunter2@h:1,h:2/svc/0") == "redis+sentinel://u:***@h:1,h:2/svc/0"
    )


def test_master_and_sentinel_credentials_stay_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_SENTINEL_USERNAME", "watcher")
    monkeypatch.setenv("FABRIC_SENTINEL_PASSWORD", "s-secret")
    target = parse_sentinel_url("rediss+sentinel://app:m-secret@h:1/svc?ssl_ca_certs=/ca.pem")
    master, sentinel = sentinel_options(target, {"socket_connect_timeout": 5.0, "x": 1})
    assert master == {
        "socket_connect_timeout": 5.0,
        "x": 1,
        "username": "app",
        "password": "m-secret",
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
    }
    assert sentinel == {
        "socket_connect_timeout": 5.0,
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
        "username": "watcher",
        "password": "s-secret",
    }


def test_connect_builds_sentinel_managed_clients_without_a_round_trip() -> None:
    url = "redis+sentinel://127.0.0.1:1,127.0.0.1:2/fleet/2"
    assert is_sentinel_url(url) and not is_sentinel_url("redis://127.0.0.1:1/0")
    client = connect(url)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "fleet" and pool.connection_kwargs["db"] == 2
    client.close()
    async_pool = connect_async(url).connection_pool
    assert isinstance(async_pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert async_pool.service_name == "fleet" and async_pool.connection_kwargs["db"] == 2


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("reset"),
        redis.TimeoutError("timeout"),
        redis.BusyLoadingError("loading"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis.exceptions.ClusterError("TTL exhausted."),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.MovedError("3999 127.0.0.1:6381"),
        redis.exceptions.AskError("3999 127.0.0.1:6381"),
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        redis.exceptions.SlotNotCoveredError("slot 12 not covered"),
        redis.sentinel.MasterNotFoundError("No master found for 'fleet'"),
        ConnectionResetError(104, "Connection reset by peer"),
        BrokenPipeError(32, "Broken pipe"),
        redis.ResponseError("UNBLOCKED the stream key no longer exists"),
        redis.ResponseError(
            "UNBLOCKED force unblock from blocking operation, instance state changed "
            "(master -> replica?)"
        ),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_failover_errors_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        redis.AuthenticationError("invalid username-password pair"),
        redis.exceptions.AuthorizationError("not allowed"),
        redis.exceptions.NoPermissionError("NOPERM"),
        redis.ResponseError("ERR wrong number of arguments"),
        redis.exceptions.DataError("bad value"),
        AttributeError("'NoneType' object has no attribute 'writelines'"),
        ValueError("no"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_other_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_write_on_a_connection_closed_under_it_is_transient() -> None:
    """The real redis-py object, not a stand-in: an asyncio connection whose
    writer was dropped (as a concurrent disconnect leaves it) raises
    AttributeError from redis-py's own code (redis/redis-py#4287)."""
    connection = redis.asyncio.Connection(host="127.0.0.1", port=1)
    with pytest.raises((AttributeError, TypeError)) as info:
        asyncio.run(connection._send_packed_command([b"PING\r\n"]))
    assert is_closed_connection_bug(info.value)
    assert is_transient(info.value)


def test_the_same_error_from_our_own_code_is_a_bug() -> None:
    writer = None
    with pytest.raises(AttributeError) as info:
        writer.writelines([b"x"])  # type: ignore[attr-defined]
    assert not is_closed_connection_bug(info.value)
    assert not is_transient(info.value)
