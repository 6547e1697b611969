"""The entry codec for a batch: what a worker claims and writes, many at a time.

Per job, :mod:`.entries` spends most of its time where Python makes an object
per token: the largest token of each prompt (the vocabulary check). Here it is
found for a whole batch in one NumPy reduction over the payloads joined
together; every other check is :func:`~.entries.decode_job`'s own, so a bad
entry gets the very reason it gets alone. Results are encoded from columns
(no record per result on the way), with the tokens of the whole batch packed
in one conversion.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from fabric_worker.wire.entries import (
    SCHEMA_VERSION,
    EntryError,
    JobEntry,
    decode_job,
    pack_tokens,
)


def _payload(fields: Mapping[Any, Any], max_prompt_tokens: int) -> bytes | None:
    """The token payload, where it is one :func:`decode_job` would go on to scan."""
    raw = fields.get(b"t", fields.get("t"))
    if isinstance(raw, str):
        raw = raw.encode()
    if not isinstance(raw, bytes) or not raw or len(raw) % 4 or len(raw) > 4 * max_prompt_tokens:
        return None  # decode_job refuses it, with its reason, before any scan
    return raw


def max_tokens(payloads: Sequence[bytes | None]) -> list[int | None]:
    """The largest little-endian uint32 of each payload (None stays None)."""
    present = [p for p in payloads if p is not None]
    if not present:
        return [None] * len(payloads)
    starts = np.cumsum([0, *(len(p) // 4 for p in present[:-1])])
    tops = iter(np.maximum.reduceat(np.frombuffer(b"".join(present), "<u4"), starts).tolist())
    return [None if p is None else next(tops) for p in payloads]


def decode_jobs(
    entries: Sequence[Mapping[Any, Any]], *, vocab_size: int, max_prompt_tokens: int
) -> list[JobEntry | EntryError]:
    """:func:`decode_job` of each entry: its job, or the error it would raise."""
    payloads = [_payload(fields, max_prompt_tokens) for fields in entries]
    decoded: list[JobEntry | EntryError] = []
    for fields, top in zip(entries, max_tokens(payloads), strict=True):
        try:
            job = decode_job(
                fields, vocab_size=vocab_size, max_prompt_tokens=max_prompt_tokens, max_token=top
            )
        except EntryError as exc:
            decoded.append(exc)
        else:
            decoded.append(job)
    return decoded


def encode_results(
    *,
    ids: Sequence[str],
    tokens: Sequence[Sequence[int]],
    finish_reasons: Sequence[str],
    deliveries: Sequence[int],
    submitted_at: Sequence[float],
    started_at: Sequence[float],
    finished_at: float,
    worker: str,
    batches: Sequence[str | None] | None = None,
) -> list[tuple[bytes, bytes]]:
    """The (``h``, ``t``) fields of each result of a batch finished at once by
    one worker, byte for byte what :func:`~.entries.encode_result` makes of the
    same result with no error (``batches``: each job's batch, None for none).
    Raises ValueError when the columns differ in length, OverflowError/TypeError
    on a token that is not a uint32."""
    num_results = len(ids)
    if batches is None:
        batches = [None] * num_results
    columns = (tokens, finish_reasons, deliveries, submitted_at, started_at, batches)
    if any(len(column) != num_results for column in columns):
        raise ValueError(f"result columns of lengths {[num_results, *map(len, columns)]}")
    packed = pack_tokens(list(itertools.chain.from_iterable(tokens)))
    fields: list[tuple[bytes, bytes]] = []
    end = 0
    for job_id, job_tokens, reason, num_deliveries, submitted, started, batch in zip(
        ids, tokens, finish_reasons, deliveries, submitted_at, started_at, batches, strict=True
    ):
        start, end = end, end + 4 * len(job_tokens)
        header = {
            "v": SCHEMA_VERSION,
            "id": job_id,
            "finish_reason": reason,
            "deliveries": num_deliveries,
            "worker": worker,
            "submitted_at": submitted,
            "started_at": started,
            "finished_at": finished_at,
            "error": None,
        }
        if batch is not None:  # absent, not null, as encode_result writes it
            header["batch"] = batch
        fields.append((orjson.dumps(header), packed[start:end]))
    return fields
