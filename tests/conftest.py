"""Shared fixtures: a real redis-server per session, another per test that needs
to stop or kill it, and a fresh namespace per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.keys import Keys

_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests use separate namespaces)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for this test alone, so it may stop, kill or restart it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=True)
    server.start()
    yield server
    server.close()


@pytest.fixture
def namespace() -> str:
    return f"t{next(_counter)}"


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
