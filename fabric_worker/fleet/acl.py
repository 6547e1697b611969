"""Least-privilege Redis ACL rules for the three roles of a fleet.

Pure: no server is touched. :func:`role_rules` says what each role may run and
on which keys; :func:`setuser_line` renders a rule as one ``ACL SETUSER`` line.

The command lists were taken from what each role really sends (checked with
``MONITOR`` against Redis 7.0 and redis-py 8.1, and held by
``tests/integration/fleet/test_security.py``, which runs every role under these
rules and asserts an empty ``ACL LOG``):

- every client: ``HELLO`` (needs no grant), ``PING`` (health checks) and,
  on Redis 7.2+, ``CLIENT SETINFO`` (redis-py names itself on connect; on 7.0
  the subcommand does not exist and ``ACL SETUSER`` would reject it);
- scripts: redis-py runs them with ``EVALSHA``, ``SCRIPT LOAD`` on NOSCRIPT and
  ``SCRIPT EXISTS`` before a pipeline. ``EVAL`` is never sent, so it is not
  granted. Since Redis 7 a script's own calls are checked against the caller's
  ACL, so each role is also granted what its scripts call, and nothing more.

Key patterns name the key types of one namespace (DESIGN section 2), with
``%R~`` where a role only reads. Redis 7 counts ``XREADGROUP`` as a read of
its stream, although it moves entries into the caller's pending list: a
reader with ``XREADGROUP`` and read access to the jobs streams could take jobs
from the workers. So the reader's root permissions cover only the results
streams, and a selector grants the metadata ``fabric inspect`` reads
(``XLEN``, ``XINFO GROUPS|CONSUMERS``, ``GET``, ``HGETALL``) on the rest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from fabric_worker.wire.keys import check_namespace

_USER_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Redis 7.2 added CLIENT SETINFO; redis-py sends it on every new connection.
SETINFO_SINCE = (7, 2)

_EVERY_CLIENT = ("ping",)
_SCRIPTS = ("evalsha", "script|load", "script|exists")
# After each submit and complete script when the fleet config sets replica_acks
# (broker/replication.py); WAITAOF only where the server has it.
_REPLICA_ACKS = ("wait",)
WAITAOF_SINCE = (7, 2)


class Role(StrEnum):
    """Who connects: producers submit, workers serve, readers read results."""

    PRODUCER = "producer"
    WORKER = "worker"
    READER = "reader"


@dataclass(frozen=True, slots=True)
class Grant:
    """Commands a user may run on keys: its root permissions or one selector.

    ``key_patterns`` are spelled as Redis does (``~pat`` read and write,
    ``%R~pat`` read only). Redis allows a command if any one grant allows both
    the command and every key it touches.
    """

    commands: tuple[str, ...]
    key_patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoleRule:
    """One role's user: its root grant first, then any selectors."""

    role: Role
    username: str
    grants: tuple[Grant, ...]

    @property
    def commands(self) -> tuple[str, ...]:
        """Every command some grant allows."""
        return tuple(dict.fromkeys(c for grant in self.grants for c in grant.commands))


# What each role itself calls, beyond _EVERY_CLIENT (and _SCRIPTS if it runs any).
_OWN_COMMANDS: dict[Role, tuple[str, ...]] = {
    # load_config; then submit.lua calls GET, XADD, SET, INCRBY, and on a
    # batch's record HEXISTS, HSETNX, HGET, HDEL, PERSIST, HINCRBY, ZADD, TIME.
    # `fabric batch status|list` read the records (HGETALL, ZRANGE); `batch
    # cancel` scans the jobs streams (XRANGE) and runs cancel.lua, which also
    # writes a result per job (XADD), XACKs and XDELs the
    # entry, releases its backlog and counts it (HSET, HMGET, TYPE, EXPIRE).
    # `batch list` drops the names of expired batches from the index (ZREM).
    # INFO: a submit refused for want of memory names used memory and maxmemory.
    Role.PRODUCER: (
        *("hgetall", "get", "set", "xadd", "incrby", "hexists", "hsetnx", "hget", "hdel"),
        *("hset", "hmget", "hincrby", "persist", "expire", "type", "zadd", "zrange", "time"),
        *("xack", "xdel", "decrby", "zrem", "info"),
    ),
    # The Broker's own calls, then what complete/deadletter/renew/requeue/
    # retry.lua call (GET, SET, XADD, XACK, XDEL, XRANGE, XPENDING, XCLAIM,
    # DECRBY; on a batch's record TYPE, HINCRBY, HMGET, HSET, EXPIRE, TIME).
    # Workers never create groups: `fabric init` does.
    Role.WORKER: (
        "hgetall",
        "xreadgroup",
        "xautoclaim",
        "xpending",
        "xclaim",
        "xack",
        "xdel",
        "xlen",
        "xrange",
        "xadd",
        "get",
        "set",
        "decrby",
        # Heartbeats (broker/status.py publish): a status hash with a TTL and
        # the worker's score in the set of names.
        "hset",
        "expire",
        "zadd",
        "zremrangebyscore",  # forgetting names silent for an hour
        *("type", "hincrby", "hmget"),
        # Housekeeping (broker/trim.py): the server's clock (also the batch
        # scripts'), then results past the retention trimmed by MINID.
        "time",
        "xtrim",
    ),
    # `fabric results`: a group of its own per reader, on the results streams
    # (recreated by --from-start); TIME for `fabric top` and `fabric health`;
    # INFO for the Redis memory `fabric inspect` shows.
    Role.READER: (
        "xreadgroup",
        "xack",
        "xgroup|create",
        "xgroup|setid",
        "xgroup|destroy",
        "xrange",
        "time",
        "info",
    ),
}
# The reader's selector: what `fabric inspect`, `top`, `health`, `autoscale`
# and load_config read, read-only.
# Batch records and indexes are read by the same HGETALL and ZRANGE.
_READER_METADATA = (
    "hgetall",
    "get",
    "xlen",
    "xinfo|groups",
    "xinfo|consumers",
    "xinfo|stream",  # max-deleted-entry-id: which reader groups missed trimmed results
    "zrange",
)
# `fabric batch results` reads the dead letters of a batch with their reasons.
_READER_DEAD_LETTERS = ("xrange",)
_RUNS_SCRIPTS = {Role.PRODUCER, Role.WORKER}


def _commands(role: Role) -> tuple[str, ...]:
    scripts = (*_SCRIPTS, *_REPLICA_ACKS) if role in _RUNS_SCRIPTS else ()
    return (*_EVERY_CLIENT, *scripts, *_OWN_COMMANDS[role])


def _grants(role: Role, namespace: str, extra: tuple[str, ...]) -> tuple[Grant, ...]:
    ns = namespace
    commands = (*_commands(role), *extra)
    if role is Role.PRODUCER:
        keys: tuple[str, ...] = (
            f"%R~{ns}:config",
            f"~{ns}:*:jobs",
            f"~{ns}:*:backlog",
            f"~{ns}:*:job:*",
            f"~{ns}:*:batch:*",
            f"~{ns}:*:batches",
            # cancel.lua writes results, and EVALSHA needs every key it is
            # given in one grant; a producer still reads none (no XRANGE here).
            f"~{ns}:*:results",
        )
        # `batch cancel` scans the jobs streams for the batch's entries.
        return (Grant(commands, keys), Grant(("xrange",), (f"%R~{ns}:*:jobs",)))
    if role is Role.WORKER:
        keys = (
            f"%R~{ns}:config",
            f"~{ns}:*:jobs",
            f"~{ns}:*:results",
            f"~{ns}:*:dlq",
            f"~{ns}:*:backlog",
            f"~{ns}:*:job:*",
            f"~{ns}:worker:*",
            f"~{ns}:workers",
            f"~{ns}:*:batch:*",
        )
        return (Grant(commands, keys),)
    return (
        Grant(commands, (f"~{ns}:*:results",)),
        Grant(_READER_METADATA, (f"%R~{ns}:*",)),
        Grant(_READER_DEAD_LETTERS, (f"%R~{ns}:*:dlq",)),
    )


def role_rules(
    namespace: str, *, user_prefix: str = "fabric", server_version: tuple[int, int] = (7, 0)
) -> list[RoleRule]:
    """The rules of every role, producer, worker, reader, in that order.

    Users are named ``<user_prefix>-<role>``. Raises ValueError on a namespace
    or prefix that cannot be used in key patterns or user names.
    """
    check_namespace(namespace)
    if not _USER_RE.fullmatch(user_prefix):
        raise ValueError(f"user prefix {user_prefix!r}: use 1 to 64 characters from [A-Za-z0-9._-]")
    if server_version < (7, 0):
        raise ValueError(f"server version {server_version}: Redis 7.0 is the floor")
    extra = ("client|setinfo",) if server_version >= SETINFO_SINCE else ()
    waitaof = ("waitaof",) if server_version >= WAITAOF_SINCE else ()
    return [
        RoleRule(
            role=role,
            username=f"{user_prefix}-{role.value}",
            grants=_grants(role, namespace, extra + (waitaof if role in _RUNS_SCRIPTS else ())),
        )
        for role in Role
    ]


def password_hash(password: str) -> str:
    """The SHA-256 hex digest Redis accepts as ``#<hash>``: the rule never holds
    the password itself."""
    return hashlib.sha256(password.encode()).hexdigest()


def setuser_tokens(rule: RoleRule, password: str | None) -> list[str]:
    """The arguments of ``ACL SETUSER`` for ``rule``.

    ``reset`` first makes the line idempotent and drops anything granted
    before. Without a password the user is left ``off``: it exists for review
    but nobody can log in as it.
    """
    if password is not None and not password:
        raise ValueError(f"{rule.username}: empty password")
    auth = ["on", f"#{password_hash(password)}"] if password is not None else ["off"]
    root, *selectors = rule.grants
    return [
        rule.username,
        "reset",
        *auth,
        "resetchannels",
        *root.key_patterns,
        "-@all",
        *(f"+{command}" for command in root.commands),
        *(
            "(" + " ".join([*s.key_patterns, *(f"+{c}" for c in s.commands)]) + ")"
            for s in selectors
        ),
    ]


def setuser_line(rule: RoleRule, password: str | None) -> str:
    """``rule`` as one ``ACL SETUSER`` line, for redis-cli or a config script.

    A selector holds spaces, so it is double-quoted, as redis-cli expects.
    """
    tokens = ["ACL", "SETUSER", *setuser_tokens(rule, password)]
    return " ".join(f'"{t}"' if " " in t else t for t in tokens)


def parse_server_version(text: str) -> tuple[int, int]:
    """``"7.0.15"`` or ``"7.2"`` to ``(7, 0)``/``(7, 2)``; ValueError otherwise."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", text.strip())
    if match is None:
        raise ValueError(f"server version {text!r}: expected MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2))


def passwords_from_env(specs: tuple[str, ...], environ: Mapping[str, str]) -> dict[Role, str]:
    """Passwords named by ``ROLE=ENV_VAR`` specs, looked up in ``environ``.

    Raises ValueError naming the spec if the role is unknown or the variable
    is unset or empty (an empty password would let anyone in).
    """
    passwords: dict[Role, str] = {}
    for spec in specs:
        role_name, _, var = spec.partition("=")
        if role_name not in {r.value for r in Role} or not var:
            raise ValueError(
                f"{spec!r}: expected ROLE=ENV_VAR with ROLE one of "
                f"{', '.join(r.value for r in Role)}"
            )
        value = environ.get(var)
        if not value:
            raise ValueError(f"{spec!r}: environment variable {var} is not set or empty")
        passwords[Role(role_name)] = value
    return passwords
