"""Creating a namespace (``fabric init``) and loading its fleet config."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis

from fabric_worker.wire.fleet_config import ConfigError, FleetConfig
from fabric_worker.wire.keys import GROUP, Keys


class NamespaceNotInitialised(ConfigError):
    """The namespace has no config yet."""


class InitOutcome(StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class InitResult:
    outcome: InitOutcome
    config: FleetConfig


def load_config(client: redis.Redis, keys: Keys) -> FleetConfig:
    """The stored fleet config. Raises NamespaceNotInitialised or ConfigError."""
    raw = client.hgetall(keys.config)
    if not raw:
        raise NamespaceNotInitialised(
            f"namespace {keys.namespace!r} has no config: run `fabric init` first"
        )
    return FleetConfig.from_hash(raw)


def ensure_groups(client: redis.Redis, keys: Keys, lanes: tuple[int, ...]) -> None:
    """Create each lane's stream and ``workers`` group; existing ones are kept."""
    for lane in lanes:
        try:
            # Id 0, not $: entries that reached the stream before its group did
            # (a raw XADD, a restore) must still be delivered.
            client.xgroup_create(keys.jobs(lane), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def work_held(client: redis.Redis, keys: Keys, lanes: tuple[int, ...]) -> dict[int, str]:
    """Lanes that hold queued or in-flight work, with a description of it."""
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.xlen(keys.jobs(lane))
        pipe.get(keys.backlog(lane))
    replies = pipe.execute()
    held: dict[int, str] = {}
    for lane, length, backlog in zip(lanes, replies[::2], replies[1::2], strict=True):
        tokens = int(backlog or 0)
        if length or tokens:
            held[lane] = f"{length} entries, {tokens} backlog tokens"
    return held


def init_namespace(client: redis.Redis, keys: Keys, wanted: FleetConfig) -> InitResult:
    """Store ``wanted`` and create the lanes. Idempotent.

    Changing limits bumps the version. Changing lane boundaries is refused while
    any old lane holds work: jobs already queued were laned and costed by the
    old boundaries, and moving them is not this command's business.
    """
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.config)
                raw = pipe.hgetall(keys.config)
                current = FleetConfig.from_hash(raw) if raw else None
                if current is not None and current.lanes != wanted.lanes:
                    held = work_held(client, keys, current.lanes)
                    if held:
                        detail = "; ".join(f"lane {k}: {v}" for k, v in held.items())
                        raise ConfigError(
                            f"lanes: refusing to change the lane boundaries of namespace "
                            f"{keys.namespace!r} from {list(current.lanes)} to "
                            f"{list(wanted.lanes)} while it holds work ({detail}); drain it "
                            f"or use another namespace"
                        )
                if current is not None and current.same_settings(wanted):
                    outcome, stored = InitOutcome.UNCHANGED, current
                else:
                    version = 1 if current is None else current.version + 1
                    stored = wanted.with_version(version)
                    outcome = InitOutcome.CREATED if current is None else InitOutcome.UPDATED
                    pipe.multi()
                    pipe.delete(keys.config)
                    pipe.hset(keys.config, mapping=stored.to_hash())
                    pipe.execute()
                break
            except redis.WatchError:
                continue
    ensure_groups(client, keys, stored.lanes)
    return InitResult(outcome, stored)
