"""Server-side scripts: their sources, and one typed call per script.

Each ``lua/<name>.lua`` starts with a ``#!lua`` shebang: scripts that add
data have no flags, so Redis refuses them whole when it is out of memory,
before any write; those that only touch existing entries carry
``flags=allow-oom`` and still run. Each may then name ``-- include: a, b``: Redis has no
include directive, so :func:`source` joins ``lua/includes/a.lua`` and
``b.lua`` in front of the script before it is loaded. The KEYS and ARGV of
every script are built here and nowhere else, and every reply is turned into
an enum (:mod:`fabric_worker.wire.replies`) here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript, Script

from fabric_worker.broker import text
from fabric_worker.wire.claims import Completion, DeadLetter, HandBack, Retry
from fabric_worker.wire.keys import GROUP, Keys
from fabric_worker.wire.replies import CancelReply, CompleteReply, DeadLetterReply, ReplayReply

_INCLUDE = re.compile(r"^-- include: (.+)$", re.M)


def _read(*parts: str) -> str:
    return resources.files("fabric_worker.broker").joinpath("lua", *parts).read_text()


@cache
def source(name: str) -> str:
    """The text of ``fabric_worker/broker/lua/<name>.lua``, its includes first."""
    body = _read(f"{name}.lua")
    # The shebang (``#!lua``, with its flags) is only read on the first line.
    shebang, _, body = body.partition("\n") if body.startswith("#!") else ("", "", body)
    names = [n.strip() for m in _INCLUDE.finditer(body) for n in m.group(1).split(",")]
    included = "".join(_read("includes", f"{n}.lua") + "\n" for n in names)
    return (shebang + "\n" if shebang else "") + included + body


def register(client: Any, name: str) -> Script | AsyncScript:
    """Register a script with a redis-py client (sync, async or cluster).

    redis-py runs it by EVALSHA and reloads it on NOSCRIPT, so a restarted
    server is handled without our help.
    """
    script: Script | AsyncScript = client.register_script(source(name))
    return script


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: which script, with which KEYS and ARGV."""

    script: str
    keys: list[str]
    args: list[Any]


def _state_key(keys: Keys, lane: int, job_id: str | None) -> tuple[str, str]:
    """The job-state key, or any key of the lane when the id is unknown (a
    script may only touch keys it is given); and the flag saying which."""
    return (keys.job(lane, job_id), "1") if job_id else (keys.backlog(lane), "0")


def _record_key(keys: Keys, lane: int, batch: str | None) -> str:
    """A job's batch record in its lane; the lane's backlog key (which the
    scripts tell apart) for a job of no batch."""
    return keys.batch(lane, batch) if batch else keys.backlog(lane)


def complete(keys: Keys, lane: int, batch: Sequence[Completion], *, retention_s: int) -> Call:
    """One call for a batch of completions, all of ``lane`` (one cluster slot)."""
    state_keys = []
    records = []
    args: list[Any] = [GROUP, retention_s]
    for c in batch:
        if c.lane != lane:
            raise ValueError(f"a completion of lane {c.lane} in a batch of lane {lane}")
        state_keys.append(keys.job(lane, c.job_id))
        records.append(_record_key(keys, lane, c.batch))
        args += [c.entry_id, c.cost_tokens, c.header, c.tokens]
    return Call(
        "complete",
        [keys.jobs(lane), keys.results(lane), keys.backlog(lane), *state_keys, *records],
        args,
    )


def dead_letter(
    keys: Keys, d: DeadLetter, *, retention_s: int, consumer: str, now_unix: float
) -> Call:
    state_key, own = _state_key(keys, d.lane, d.job_id)
    return Call(
        "deadletter",
        [
            keys.jobs(d.lane),
            keys.dlq(d.lane),
            keys.backlog(d.lane),
            state_key,
            _record_key(keys, d.lane, d.batch),
        ],
        [
            GROUP,
            d.entry_id,
            d.cost_tokens,
            retention_s,
            d.reason,
            d.deliveries,
            d.error,
            consumer,
            f"{now_unix:.3f}",
            own,
        ],
    )


def renew(keys: Keys, lane: int, consumer: str, entry_ids: Sequence[bytes]) -> Call:
    return Call("renew", [keys.jobs(lane)], [GROUP, consumer, *entry_ids])


def requeue(keys: Keys, h: HandBack, consumer: str) -> Call:
    state_key, own = _state_key(keys, h.lane, h.job_id)
    return Call("requeue", [keys.jobs(h.lane), state_key], [GROUP, consumer, h.entry_id, own])


def retry(keys: Keys, r: Retry, consumer: str) -> Call:
    return Call("retry", [keys.jobs(r.lane)], [GROUP, consumer, r.entry_id, r.idle_ms])


def replay(
    keys: Keys,
    lane: int,
    entry_id: str,
    *,
    job_id: str | None,
    cost_tokens: int,
    batch: str | None = None,
) -> Call:
    state_key, own = _state_key(keys, lane, job_id)
    return Call(
        "replay",
        [
            keys.dlq(lane),
            keys.jobs(lane),
            keys.backlog(lane),
            state_key,
            _record_key(keys, lane, batch),
        ],
        [entry_id, cost_tokens, own],
    )


def submit(
    keys: Keys,
    lane: int,
    jobs: Sequence[tuple[str, int, bytes, bytes]],
    *,
    cap: int,
    nonce: str,
    batch: str | None = None,
) -> Call:
    """``jobs``: (id, padded cost, header, packed tokens) of each job, in order,
    all of ``batch`` (or of none)."""
    args: list[Any] = [cap, nonce, batch or ""]
    for _, cost, header, tokens in jobs:
        args += [cost, header, tokens]
    index = keys.batches(lane) if batch else keys.backlog(lane)
    return Call(
        "submit",
        [
            keys.jobs(lane),
            keys.backlog(lane),
            _record_key(keys, lane, batch),
            index,
            *(keys.job(lane, job[0]) for job in jobs),
        ],
        args,
    )


def cancel(
    keys: Keys,
    lane: int,
    batch: str,
    jobs: Sequence[tuple[str, str, int | None, bytes]],
    *,
    retention_s: int,
) -> Call:
    """``jobs``: (entry id, job id, padded cost or None where the entry's
    header gives none, cancelled result header) of each of the batch's
    entries of ``lane``; none just marks the lane."""
    args: list[Any] = [GROUP, retention_s, batch]
    for entry_id, _, cost, header in jobs:
        args += [entry_id, "" if cost is None else cost, header]
    return Call(
        "cancel",
        [
            keys.jobs(lane),
            keys.results(lane),
            keys.backlog(lane),
            keys.batch(lane, batch),
            keys.batches(lane),
            *(keys.job(lane, job[1]) for job in jobs),
        ],
        args,
    )


# --- replies ------------------------------------------------------------------------


def complete_replies(raw: Sequence[Any]) -> list[CompleteReply | str]:
    """One reply per job of a batch: the outcome, or the text of why that job
    could not be completed (``error ...``: nothing of it was written)."""
    replies: list[CompleteReply | str] = []
    for r in raw:
        t = text(r)
        replies.append(t if t.startswith("error") else CompleteReply(t))
    return replies


def cancel_replies(raw: Sequence[Any]) -> list[CancelReply]:
    """One reply per entry of the call, in order."""
    return [CancelReply(text(r)) for r in raw]


def dead_letter_reply(raw: object) -> DeadLetterReply:
    return DeadLetterReply(text(raw))


def renew_reply(raw: Sequence[Any]) -> list[bytes]:
    """The ids whose lease was lost."""
    return [bytes(x) for x in raw]


def requeue_reply(raw: object) -> bool:
    """Whether the entry went back (the script answers the copy's id, or Lua
    false when the entry was not ours any more)."""
    return bool(raw)


def retry_reply(raw: object) -> bool:
    return bool(raw)


def replay_reply(raw: Sequence[Any]) -> tuple[ReplayReply, str]:
    """The outcome, and the new entry id or the job state that stopped it."""
    return ReplayReply(text(raw[0])), text(raw[1]) if len(raw) > 1 else ""
