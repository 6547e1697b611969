"""ACL rule generation: pure, no server (tests/integration/fleet/test_security.py applies
the rules to a real Redis)."""

from __future__ import annotations

import hashlib
import shlex
from fnmatch import fnmatchcase

import pytest

from fabric_worker.fleet.acl import (
    Role,
    parse_server_version,
    passwords_from_env,
    role_rules,
    setuser_line,
    setuser_tokens,
)
from fabric_worker.wire.keys import Keys

NS = "t1"
FORBIDDEN = {
    "@all",
    "@admin",
    "@dangerous",
    "flushall",
    "flushdb",
    "config",
    "keys",
    "debug",
    "acl",
    "shutdown",
    "module",
    "eval",
    "script|flush",
    "script|kill",
    "function",
    "monitor",
    "select",
    "swapdb",
    "migrate",
    "del",
}


# Commands whose key access Redis 7.0 counts as read-only (COMMAND INFO key
# specs); every other command used here needs read and write. XREADGROUP is
# among them although it moves entries into the caller's pending list.
READ_ONLY = {
    *("get", "mget", "hgetall", "zrange", "xlen", "xrange", "xpending", "xreadgroup"),
    "xinfo|groups",
    "xinfo|stream",
}


def can(role: Role, command: str, key: str) -> bool:
    """Would Redis let ``role`` run ``command`` on ``key``? Some grant (root or
    selector) must allow both. The patterns use only '*', where Redis's glob
    and fnmatch agree."""
    [rule] = [r for r in role_rules(NS) if r.role is role]
    for grant in rule.grants:
        if command not in grant.commands:
            continue
        for pattern in grant.key_patterns:
            read_only, _, glob = pattern.partition("~")
            if fnmatchcase(key, glob) and (read_only != "%R" or command in READ_ONLY):
                return True
    return False


def test_every_role_is_limited_to_its_commands() -> None:
    rules = {rule.role: rule for rule in role_rules(NS)}
    assert [rule.username for rule in rules.values()] == [
        "fabric-producer",
        "fabric-worker",
        "fabric-reader",
    ]
    scripts = {"evalsha", "script|load", "script|exists", "wait"}
    # submit.lua and cancel.lua, on jobs, states, backlog and batch records.
    batch_records = {"hexists", "hsetnx", "hget", "hdel", "hset", "hmget", "hincrby", "persist"}
    batch_records |= {"expire", "type", "zadd", "zrange", "time"}
    assert set(rules[Role.PRODUCER].commands) == {
        "ping",
        *scripts,
        *("hgetall", "get", "set", "xadd", "incrby"),
        *batch_records,
        *("xrange", "xack", "xdel", "decrby", "zrem"),
        "info",  # a submit refused for memory names used and maxmemory
    }
    assert rules[Role.PRODUCER].grants[1].commands == ("xrange",)  # jobs only, read-only
    assert set(rules[Role.WORKER].commands) >= {
        "ping",
        *scripts,
        "xreadgroup",
        "xautoclaim",
        "xpending",
        "xclaim",
        "xack",
        "xdel",
        "decrby",
        "time",  # the server's clock for the trim cutoff
        "xtrim",
    }
    assert not set(rules[Role.WORKER].commands) & {"incrby", "xgroup|create", "xgroup|setid"}
    reader = set(rules[Role.READER].commands)
    assert "xgroup|create" in reader and "xinfo|groups" in reader
    # root (results), read-only metadata, read-only dead letters
    assert len(rules[Role.READER].grants) == 3
    assert not reader & {*scripts, "xadd", "set", "xdel", "xclaim", "xautoclaim"}
    for rule in rules.values():
        assert not set(rule.commands) & FORBIDDEN, rule.role
        assert len(set(rule.commands)) == len(rule.commands), rule.role


@pytest.mark.parametrize(
    ("role", "command", "key", "allowed"),
    [
        (Role.PRODUCER, "hgetall", Keys(NS).config, True),
        (Role.PRODUCER, "xadd", Keys(NS).jobs(64), True),
        (Role.PRODUCER, "incrby", Keys(NS).backlog(64), True),
        (Role.PRODUCER, "set", Keys(NS).job(64, "a:b"), True),
        (Role.PRODUCER, "evalsha", Keys(NS).job(64, "a:b"), True),
        (Role.PRODUCER, "xadd", Keys(NS).config, False),
        (Role.PRODUCER, "xreadgroup", Keys(NS).jobs(64), False),
        (Role.PRODUCER, "xrange", Keys(NS).results(64), False),
        (Role.PRODUCER, "xadd", Keys(NS).dlq(64), False),
        # Batches: a producer counts, reads and cancels them; a cancel writes results.
        (Role.PRODUCER, "hincrby", Keys(NS).batch(64, "b"), True),
        (Role.PRODUCER, "hgetall", Keys(NS).batch(64, "b"), True),
        (Role.PRODUCER, "zadd", Keys(NS).batches(64), True),
        (Role.PRODUCER, "xadd", Keys(NS).results(64), True),
        (Role.PRODUCER, "xack", Keys(NS).jobs(64), True),
        (Role.PRODUCER, "xrange", Keys(NS).jobs(64), True),
        (Role.PRODUCER, "xreadgroup", Keys(NS).results(64), False),
        (Role.PRODUCER, "xgroup|create", Keys(NS).results(64), False),
        (Role.WORKER, "hincrby", Keys(NS).batch(64, "b"), True),
        (Role.WORKER, "zadd", Keys(NS).batches(64), False),
        (Role.READER, "hgetall", Keys(NS).batch(64, "b"), True),
        (Role.READER, "zrange", Keys(NS).batches(64), True),
        (Role.READER, "xrange", Keys(NS).dlq(64), True),
        (Role.READER, "hincrby", Keys(NS).batch(64, "b"), False),
        (Role.WORKER, "hgetall", Keys(NS).config, True),
        (Role.WORKER, "xreadgroup", Keys(NS).jobs(32768), True),
        (Role.WORKER, "xautoclaim", Keys(NS).jobs(64), True),
        (Role.WORKER, "evalsha", Keys(NS).results(64), True),
        (Role.WORKER, "xadd", Keys(NS).dlq(64), True),
        (Role.WORKER, "decrby", Keys(NS).backlog(64), True),
        (Role.WORKER, "set", Keys(NS).job(64, "x"), True),
        (Role.WORKER, "hset", Keys(NS).worker("gpu0"), True),
        (Role.WORKER, "zadd", Keys(NS).workers, True),
        (Role.WORKER, "xtrim", Keys(NS).results(64), True),
        (Role.WORKER, "xtrim", Keys(NS).jobs(64), True),  # never done, but one pattern covers both
        (Role.READER, "xtrim", Keys(NS).results(64), False),
        (Role.READER, "xinfo|stream", Keys(NS).results(64), True),
        (Role.WORKER, "set", Keys(NS).config, False),
        (Role.WORKER, "xgroup|create", Keys(NS).jobs(64), False),
        (Role.READER, "hgetall", Keys(NS).config, True),
        (Role.READER, "xlen", Keys(NS).jobs(64), True),
        (Role.READER, "xinfo|groups", Keys(NS).jobs(64), True),
        (Role.READER, "get", Keys(NS).backlog(64), True),
        (Role.READER, "xgroup|create", Keys(NS).results(64), True),
        (Role.READER, "xreadgroup", Keys(NS).results(64), True),
        (Role.READER, "xack", Keys(NS).results(64), True),
        (Role.READER, "zrange", Keys(NS).workers, True),
        (Role.READER, "hgetall", Keys(NS).worker("gpu0"), True),
        (Role.READER, "zremrangebyscore", Keys(NS).workers, False),
        (Role.WORKER, "zremrangebyscore", Keys(NS).workers, True),
        (Role.READER, "hset", Keys(NS).worker("gpu0"), False),
        (Role.READER, "xreadgroup", Keys(NS).jobs(64), False),
        (Role.READER, "xrange", Keys(NS).jobs(64), False),
        (Role.READER, "xadd", Keys(NS).jobs(64), False),
        (Role.READER, "xack", Keys(NS).jobs(64), False),
        # Other namespaces, including ones that share a prefix with ours.
        (Role.WORKER, "xreadgroup", Keys("t10").jobs(64), False),
        (Role.WORKER, "hgetall", Keys("t1x").config, False),
        (Role.READER, "xreadgroup", Keys("other").results(64), False),
        (Role.READER, "hgetall", Keys("t10").config, False),
        (Role.PRODUCER, "get", "t1", False),
    ],
)
def test_each_role_reaches_its_keys_and_no_others(
    role: Role, command: str, key: str, allowed: bool
) -> None:
    assert can(role, command, key) is allowed


def test_client_setinfo_only_where_the_server_has_it() -> None:
    for rule in role_rules(NS, server_version=(7, 0)):
        assert "client|setinfo" not in rule.commands
    for rule in role_rules(NS, server_version=(7, 2)):
        assert "client|setinfo" in rule.commands
    for rule in role_rules(NS, server_version=(8, 0)):
        assert "client|setinfo" in rule.commands


def test_setuser_line_holds_a_hash_never_the_password() -> None:
    rule = role_rules(NS, user_prefix="ops")[0]
    line = setuser_line(rule, "hunter2-correct-horse")
    assert "hunter2" not in line
    digest = hashlib.sha256(b"hunter2-correct-horse").hexdigest()
    tokens = shlex.split(line)
    assert tokens[:5] == ["ACL", "SETUSER", "ops-producer", "reset", "on"]
    assert f"#{digest}" in tokens
    assert "resetchannels" in tokens and "-@all" in tokens
    # Grants come after -@all, or -@all would take them back.
    assert all(tokens.index(t) > tokens.index("-@all") for t in tokens if t.startswith("+"))
    assert tokens == ["ACL", "SETUSER", *setuser_tokens(rule, "hunter2-correct-horse")]


def test_a_selector_is_one_quoted_argument() -> None:
    reader = role_rules(NS)[2]
    tokens = setuser_tokens(reader, "pw")
    metadata = "(%R~t1:* +hgetall +get +xlen +xinfo|groups +xinfo|consumers +xinfo|stream +zrange)"
    assert tokens[-2] == metadata
    assert tokens[-1] == "(%R~t1:*:dlq +xrange)"
    line = setuser_line(reader, "pw")
    assert f' "{metadata}" ' in line
    assert shlex.split(line) == ["ACL", "SETUSER", *tokens]


def test_a_user_without_a_password_is_created_off() -> None:
    rule = role_rules(NS)[1]
    tokens = setuser_tokens(rule, None)
    assert "off" in tokens and "on" not in tokens
    assert not any(t.startswith(("#", ">", "nopass")) for t in tokens)
    with pytest.raises(ValueError, match="empty password"):
        setuser_tokens(rule, "")


@pytest.mark.parametrize(
    ("namespace", "options", "message"),
    [
        ("bad ns", {}, "namespace"),
        ("t1*", {}, "namespace"),
        (NS, {"user_prefix": "a b"}, "user prefix"),
        (NS, {"user_prefix": ""}, "user prefix"),
        (NS, {"server_version": (6, 2)}, "7.0 is the floor"),
    ],
)
def test_bad_inputs_are_refused(namespace: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        role_rules(namespace, **options)  # type: ignore[arg-type]


def test_parse_server_version() -> None:
    assert parse_server_version("7.0.15") == (7, 0)
    assert parse_server_version("7.2") == (7, 2)
    assert parse_server_version(" 8.10.1\n") == (8, 10)
    for bad in ("7", "seven", "7.x", "7.0.1.2", ""):
        with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
            parse_server_version(bad)


def test_passwords_from_env() -> None:
    environ = {"P": "pw-p", "W": "pw-w", "EMPTY": ""}
    assert passwords_from_env(("producer=P", "worker=W"), environ) == {
        Role.PRODUCER: "pw-p",
        Role.WORKER: "pw-w",
    }
    assert passwords_from_env((), environ) == {}
    for spec, message in [
        ("admin=P", "ROLE one of producer, worker, reader"),
        ("producer", "ROLE=ENV_VAR"),
        ("producer=", "ROLE=ENV_VAR"),
        ("reader=NOPE", "NOPE is not set or empty"),
        ("reader=EMPTY", "EMPTY is not set or empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            passwords_from_env((spec,), environ)


def test_waitaof_is_granted_only_where_the_server_has_it() -> None:
    """replica_acks waits with WAITAOF on 7.2+; on 7.0 naming it would make
    ACL SETUSER fail (unknown command)."""
    for version, expected in (((7, 0), False), ((7, 2), True)):
        rules = {rule.role: set(rule.commands) for rule in role_rules(NS, server_version=version)}
        assert ("waitaof" in rules[Role.PRODUCER]) is expected
        assert ("waitaof" in rules[Role.WORKER]) is expected
        assert "waitaof" not in rules[Role.READER] and "wait" not in rules[Role.READER]
