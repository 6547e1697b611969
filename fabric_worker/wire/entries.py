"""The entry codec shared by producers and workers.

The job entry (``h`` orjson header + ``t`` tokens as little-endian uint32) and
the result entry of the same shape (DESIGN section 2), with the size caps a
worker applies before parsing anything. Encoding and decoding are pure
functions; decoding never trusts a payload's size. Key names: :mod:`.keys`.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

SCHEMA_VERSION = 1

# Caps on what a worker will even look at. A header is a few dozen bytes in
# practice; 4 KiB leaves room for long ids and class names. The entry cap
# bounds the token payload too (65,536 tokens), whatever the lanes say.
MAX_HEADER_BYTES = 4096
MAX_ENTRY_BYTES = 4 * 65536 + MAX_HEADER_BYTES

MAX_ID_CHARS = 128
MAX_CLASS_CHARS = 128
_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

if array("I").itemsize != 4:  # pragma: no cover - every platform we ship on
    raise ImportError("array('I') is not 32-bit on this platform")
_SWAP = sys.byteorder != "little"


class EntryError(ValueError):
    """An entry that cannot be served; ``reason`` goes to the dead-letter stream."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_valid_id(job_id: str) -> bool:
    return bool(_ID_RE.fullmatch(job_id))


def is_valid_batch(name: object) -> bool:
    """A batch name is part of key names, so it takes the id rules."""
    return isinstance(name, str) and bool(_ID_RE.fullmatch(name))


# --- tokens -----------------------------------------------------------------


def pack_tokens(tokens: Sequence[int] | array[int]) -> bytes:
    """Tokens as little-endian uint32. Raises OverflowError/TypeError on ids
    that are negative, too large for uint32 or not integers."""
    packed = tokens if isinstance(tokens, array) else array("I", tokens)
    if _SWAP:  # pragma: no cover - big-endian hosts only
        packed = array("I", packed)
        packed.byteswap()
    return packed.tobytes()


def unpack_tokens(data: bytes) -> array[int]:
    """The inverse of :func:`pack_tokens`. Raises EntryError on a ragged payload."""
    if len(data) % 4:
        raise EntryError(f"token payload of {len(data)} bytes is not a multiple of 4")
    tokens = array("I")
    tokens.frombytes(data)
    if _SWAP:  # pragma: no cover
        tokens.byteswap()
    return tokens


# --- job entries ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobEntry:
    """A job as it travels on a lane stream."""

    id: str
    tokens: array[int]
    max_new_tokens: int
    prefix_class: str | None = None
    end_id: int | None = None
    submitted_at: float = 0.0
    batch: str | None = None


def encode_job(entry: JobEntry) -> dict[str, bytes]:
    """The stream fields of a job entry (the caller has validated it)."""
    header = {
        "v": SCHEMA_VERSION,
        "id": entry.id,
        "max_new_tokens": entry.max_new_tokens,
        "class": entry.prefix_class,
        "end_id": entry.end_id,
        "submitted_at": entry.submitted_at,
    }
    if entry.batch is not None:  # absent, not null: a job of no batch keeps its bytes
        header["batch"] = entry.batch
    return {"h": orjson.dumps(header), "t": pack_tokens(entry.tokens)}


def _field(fields: Mapping[Any, Any], name: str) -> bytes:
    value = fields.get(name.encode())
    if value is None:
        value = fields.get(name)
    if value is None:
        raise EntryError(f"missing field {name!r}")
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise EntryError(f"field {name!r} is not a byte string")
    return value


def _load_header(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_HEADER_BYTES:
        raise EntryError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EntryError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise EntryError("header is not a JSON object")
    version = header.get("v")
    if version != SCHEMA_VERSION:
        raise EntryError(f"schema version {version!r} is not {SCHEMA_VERSION}")
    return header


def _int_field(header: Mapping[str, Any], name: str, *, low: int, high: int) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EntryError(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value < high:
        raise EntryError(f"{name} {value} is outside [{low}, {high})")
    return value


def decode_job(
    fields: Mapping[Any, Any],
    *,
    vocab_size: int,
    max_prompt_tokens: int,
    max_token: int | None = None,
) -> JobEntry:
    """Decode and check a job entry. Raises EntryError with a reason for anything
    a worker must not serve: sizes are checked before anything is parsed. The
    payload's largest token is ``max_token`` where known (``bulk.decode_jobs``)."""
    total = sum(len(k) + len(v) for k, v in fields.items() if isinstance(v, bytes | str))
    if total > MAX_ENTRY_BYTES:
        raise EntryError(f"entry of {total} bytes exceeds {MAX_ENTRY_BYTES}")
    extra = {k if isinstance(k, bytes) else str(k).encode() for k in fields} - {b"h", b"t"}
    if extra:
        shown = sorted(k.decode(errors="replace")[:40] for k in extra)[:5]
        raise EntryError(f"unexpected fields {shown}")
    header = _load_header(_field(fields, "h"))
    raw_tokens = _field(fields, "t")
    if len(raw_tokens) > 4 * max_prompt_tokens:
        raise EntryError(
            f"prompt of {len(raw_tokens) // 4} tokens exceeds the largest lane "
            f"({max_prompt_tokens})"
        )
    tokens = unpack_tokens(raw_tokens)
    if not tokens:
        raise EntryError("prompt is empty")
    top = max_token if max_token is not None else max(tokens)
    if top >= vocab_size:
        raise EntryError(f"token {top} is outside [0, {vocab_size})")
    job_id = header.get("id")
    if not isinstance(job_id, str) or not is_valid_id(job_id):
        raise EntryError(f"id {job_id!r} is not 1 to 128 characters from [A-Za-z0-9._:-]")
    max_new = _int_field(header, "max_new_tokens", low=1, high=1 << 31)
    end_id = header.get("end_id")
    if end_id is not None:
        end_id = _int_field(header, "end_id", low=0, high=vocab_size)
    prefix_class = header.get("class")
    if prefix_class is not None and (
        not isinstance(prefix_class, str) or not 0 < len(prefix_class) <= MAX_CLASS_CHARS
    ):
        raise EntryError(f"class must be a string of 1 to {MAX_CLASS_CHARS} characters")
    submitted_at = header.get("submitted_at", 0.0)
    if not isinstance(submitted_at, int | float) or isinstance(submitted_at, bool):
        raise EntryError("submitted_at must be a number")
    batch = header.get("batch")
    if batch is not None and not is_valid_batch(batch):
        raise EntryError(f"batch {batch!r} is not 1 to 128 characters from [A-Za-z0-9._:-]")
    return JobEntry(
        id=job_id,
        tokens=tokens,
        max_new_tokens=max_new,
        prefix_class=prefix_class,
        end_id=end_id,
        submitted_at=float(submitted_at),
        batch=batch,
    )


def peek_header(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """Best-effort header of an entry that may not decode: {} when it is
    missing, too large, not JSON or not an object (never raises)."""
    try:
        raw = _field(fields, "h")
        header = orjson.loads(raw) if len(raw) <= MAX_HEADER_BYTES else None
    except (EntryError, orjson.JSONDecodeError):
        return {}
    return header if isinstance(header, dict) else {}


def peek_id(fields: Mapping[Any, Any]) -> str | None:
    """Best-effort job id of an entry that failed to decode (for dead letters)."""
    job_id = peek_header(fields).get("id")
    return job_id if isinstance(job_id, str) and is_valid_id(job_id) else None


def peek_batch(fields: Mapping[Any, Any]) -> str | None:
    """Best-effort batch of an entry that failed to decode (its counts)."""
    batch = peek_header(fields).get("batch")
    return batch if is_valid_batch(batch) else None


# --- results ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultEntry:
    """One job's result, as written to its lane's results stream."""

    id: str
    tokens: Sequence[int]
    finish_reason: str
    deliveries: int
    worker: str
    submitted_at: float
    started_at: float
    finished_at: float
    error: str | None = None
    batch: str | None = None


def encode_result(result: ResultEntry) -> dict[str, bytes]:
    header = {
        "v": SCHEMA_VERSION,
        "id": result.id,
        "finish_reason": result.finish_reason,
        "deliveries": result.deliveries,
        "worker": result.worker,
        "submitted_at": result.submitted_at,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "error": result.error,
    }
    if result.batch is not None:
        header["batch"] = result.batch
    return {"h": orjson.dumps(header), "t": pack_tokens(result.tokens)}


def decode_result(fields: Mapping[Any, Any]) -> ResultEntry:
    """Decode a result entry. Raises EntryError if it is not one of ours."""
    header = _load_header(_field(fields, "h"))
    tokens = unpack_tokens(_field(fields, "t"))
    try:
        return ResultEntry(
            id=str(header["id"]),
            tokens=tokens.tolist(),
            finish_reason=str(header["finish_reason"]),
            deliveries=int(header["deliveries"]),
            worker=str(header["worker"]),
            submitted_at=float(header["submitted_at"]),
            started_at=float(header["started_at"]),
            finished_at=float(header["finished_at"]),
            error=header.get("error"),
            batch=header.get("batch") if is_valid_batch(header.get("batch")) else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EntryError(f"result header is missing or has a bad field: {exc}") from None


def result_json(result: ResultEntry) -> dict[str, Any]:
    """The result as the JSONL line ``fabric results`` prints."""
    return {
        "id": result.id,
        "tokens": list(result.tokens),
        "finish_reason": result.finish_reason,
        "deliveries": result.deliveries,
        "worker": result.worker,
        "error": result.error,
        "submitted_at": result.submitted_at,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "latency_s": round(result.finished_at - result.submitted_at, 6),
        **({"batch": result.batch} if result.batch is not None else {}),
    }
