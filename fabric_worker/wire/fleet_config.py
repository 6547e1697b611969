"""Fleet config: lane boundaries, vocabulary and limits shared by every process.

Stored in Redis as the ``{ns}:config`` hash by ``fabric init``; producers and
workers load it and refuse a schema they do not understand. This module is pure:
it converts between the dataclass and the hash's string fields.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from fabric_worker.wire.entries import MAX_ENTRY_BYTES, MAX_HEADER_BYTES, SCHEMA_VERSION

DEFAULT_LANES: tuple[int, ...] = tuple(2**k for k in range(6, 16))  # 64 .. 32768
DEFAULT_VOCAB_SIZE = 128_256  # Llama 3
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_LEASE_S = 30.0
DEFAULT_BACKLOG_CAP_TOKENS = 200_000_000
DEFAULT_RETENTION_S = 86_400
DEFAULT_MAX_NEW_TOKENS = 8192
DEFAULT_REPLICA_ACK_TIMEOUT_MS = 1000
# Written to the stored hash only when set: a config that does not ask for
# replica acknowledgements stays readable by releases that predate them, and
# one that does is refused by them ("unknown field"), which is fail-closed.
OPTIONAL_FIELDS = {"replica_acks": 0, "replica_ack_timeout_ms": DEFAULT_REPLICA_ACK_TIMEOUT_MS}


def padded_cost(lane: int, max_new_tokens: int) -> int:
    """A job's padded cost in tokens: its lane boundary plus ``max_new_tokens``.

    Raises ValueError if ``lane`` or ``max_new_tokens`` is below 1.
    """
    if lane < 1:
        raise ValueError(f"lane must be >= 1, got {lane!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    return lane + max_new_tokens


class ConfigError(ValueError):
    """A fleet config that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What every producer and worker of one namespace agrees on.

    A job of prompt length ``p`` goes to the smallest lane ``L >= p``; its padded
    cost is ``L + max_new_tokens``, which must not exceed ``max_seq_len``.
    """

    lanes: tuple[int, ...] = DEFAULT_LANES
    vocab_size: int = DEFAULT_VOCAB_SIZE
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    lease_s: float = DEFAULT_LEASE_S
    backlog_cap_tokens: int = DEFAULT_BACKLOG_CAP_TOKENS
    retention_s: int = DEFAULT_RETENTION_S
    max_seq_len: int = DEFAULT_LANES[-1] + DEFAULT_MAX_NEW_TOKENS
    # Durability under asynchronous replication (docs/reliability.md): how many
    # replicas must acknowledge each submit and each completion (WAIT), and how
    # long to wait for them. 0: do not wait (Redis's own default).
    replica_acks: int = 0
    replica_ack_timeout_ms: int = DEFAULT_REPLICA_ACK_TIMEOUT_MS
    version: int = 1

    def __post_init__(self) -> None:
        if not self.lanes:
            raise ConfigError("lanes: at least one lane boundary is required")
        if any(not isinstance(b, int) or b < 1 for b in self.lanes):
            raise ConfigError(f"lanes: {list(self.lanes)} must be positive integers")
        if list(self.lanes) != sorted(set(self.lanes)):
            raise ConfigError(f"lanes: {list(self.lanes)} must be strictly increasing")
        if 4 * self.lanes[-1] + MAX_HEADER_BYTES > MAX_ENTRY_BYTES:
            # Producers and workers cap an entry's size; the largest prompt must fit.
            raise ConfigError(
                f"lanes: the largest lane ({self.lanes[-1]} tokens) would make entries over "
                f"the {MAX_ENTRY_BYTES}-byte cap; at most "
                f"{(MAX_ENTRY_BYTES - MAX_HEADER_BYTES) // 4}"
            )
        for name in ("vocab_size", "max_deliveries", "backlog_cap_tokens", "retention_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: {value!r} must be a positive integer")
        if not isinstance(self.replica_acks, int) or self.replica_acks < 0:
            raise ConfigError(f"replica_acks: {self.replica_acks!r} must be 0 or more")
        if not isinstance(self.replica_ack_timeout_ms, int) or self.replica_ack_timeout_ms < 1:
            raise ConfigError(
                f"replica_ack_timeout_ms: {self.replica_ack_timeout_ms!r} must be positive"
            )
        if not self.lease_s > 0:
            raise ConfigError(f"lease_s: {self.lease_s!r} must be positive")
        if self.max_seq_len <= self.lanes[-1]:
            raise ConfigError(
                f"max_seq_len: {self.max_seq_len} leaves no room for output after the "
                f"largest lane ({self.lanes[-1]})"
            )
        if self.backlog_cap_tokens < self.max_seq_len:
            raise ConfigError(
                f"backlog_cap_tokens: {self.backlog_cap_tokens} is below max_seq_len "
                f"({self.max_seq_len}); the largest job could never be queued"
            )

    @property
    def max_prompt_tokens(self) -> int:
        return self.lanes[-1]

    def lane_for(self, prompt_tokens: int) -> int | None:
        """The smallest lane boundary that holds the prompt, or None if none does."""
        index = bisect.bisect_left(self.lanes, prompt_tokens)
        return self.lanes[index] if index < len(self.lanes) else None

    def max_new_tokens_for(self, lane: int) -> int:
        """The most output a job of this lane may ask for."""
        return self.max_seq_len - lane

    def with_version(self, version: int) -> FleetConfig:
        return replace(self, version=version)

    def same_settings(self, other: FleetConfig) -> bool:
        """Equal in everything but the version counter."""
        return replace(self, version=0) == replace(other, version=0)

    def to_hash(self) -> dict[str, str]:
        """The config as the string fields of the Redis hash."""
        out = {
            f.name: str(getattr(self, f.name))
            for f in fields(self)
            if OPTIONAL_FIELDS.get(f.name, object()) != getattr(self, f.name)
        }
        out["lanes"] = ",".join(str(b) for b in self.lanes)
        out["schema"] = str(SCHEMA_VERSION)
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> FleetConfig:
        """Parse the Redis hash. Raises ConfigError naming the first bad field."""
        data = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in raw.items()
        }
        schema = data.pop("schema", None)
        if schema != str(SCHEMA_VERSION):
            raise ConfigError(
                f"schema: {schema!r} is not {SCHEMA_VERSION}; upgrade this program or re-init"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown field; upgrade this program")
        missing = sorted(known - set(data) - set(OPTIONAL_FIELDS))
        if missing:
            raise ConfigError(f"{missing[0]}: missing from the stored config")
        try:
            return cls(
                lanes=parse_lanes(data["lanes"]),
                vocab_size=int(data["vocab_size"]),
                max_deliveries=int(data["max_deliveries"]),
                lease_s=float(data["lease_s"]),
                backlog_cap_tokens=int(data["backlog_cap_tokens"]),
                retention_s=int(data["retention_s"]),
                max_seq_len=int(data["max_seq_len"]),
                replica_acks=int(data.get("replica_acks", OPTIONAL_FIELDS["replica_acks"])),
                replica_ack_timeout_ms=int(
                    data.get("replica_ack_timeout_ms", OPTIONAL_FIELDS["replica_ack_timeout_ms"])
                ),
                version=int(data["version"]),
            )
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"stored config is malformed: {exc}") from None


def parse_lanes(text: str) -> tuple[int, ...]:
    """Parse ``"64,128,256"``. Raises ConfigError on anything else."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"lanes: {text!r} is not a comma-separated list of integers") from None
