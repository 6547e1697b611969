"""Reading job files (JSONL) for ``fabric submit``: validate all, then stream.

A file is read twice: once to validate every line (nothing is written if any
line is bad), once to submit in chunks. Memory stays bounded by the chunk, not
the file. Standard input is spooled to a temporary file for the second pass.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import orjson

from fabric_worker.wire.fleet_config import FleetConfig
from producers.validation import JobError, LanedJob, job_from_json, validate_job

MAX_LINE_BYTES = 8 * 1024 * 1024  # a 32k-token prompt is ~200 KB of JSON; 8 MB is absurd


@dataclass(frozen=True, slots=True)
class LineError:
    line: int  # counted from 1
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def parse_line(
    raw: bytes, config: FleetConfig, submitted_at: float, batch: str | None = None
) -> LanedJob:
    """One JSONL line to a validated job. Raises JobError with the reason."""
    if len(raw) > MAX_LINE_BYTES:
        raise JobError(f"line of {len(raw)} bytes exceeds {MAX_LINE_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JobError(f"not valid JSON: {exc}") from None
    return validate_job(job_from_json(obj), config, submitted_at=submitted_at, batch=batch)


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(stream, start=1):
        if raw.strip():
            yield number, raw


def validate_file(
    stream: IO[bytes], config: FleetConfig, *, on_bytes: Callable[[int], None] | None = None
) -> tuple[int, list[LineError]]:
    """Check every line. Returns (number of jobs, errors). Blank lines are skipped."""
    errors: list[LineError] = []
    num_jobs = 0
    seen: set[str] = set()
    for number, raw in _lines(stream):
        if on_bytes:
            on_bytes(len(raw))
        try:
            job = parse_line(raw, config, 0.0)
        except JobError as exc:
            errors.append(LineError(number, exc.reason))
            continue
        num_jobs += 1
        # Ids given twice in one file would make the file's meaning depend on
        # its order: refuse them like any other bad line.
        if job.entry.id in seen:
            errors.append(LineError(number, f"id {job.entry.id!r} appears twice in the file"))
        seen.add(job.entry.id)
    return num_jobs, errors


def iter_chunks(
    stream: IO[bytes], config: FleetConfig, chunk_size: int, *, batch: str | None = None
) -> Iterator[tuple[list[LanedJob], int]]:
    """Yield (validated jobs, bytes read) chunks from a file already validated,
    every job in ``batch`` if one is given."""
    submitted_at = time.time()
    chunk: list[LanedJob] = []
    num_bytes = 0
    for _number, raw in _lines(stream):
        chunk.append(parse_line(raw, config, submitted_at, batch))
        num_bytes += len(raw)
        if len(chunk) >= chunk_size:
            yield chunk, num_bytes
            chunk, num_bytes = [], 0
    if chunk:
        yield chunk, num_bytes


def seekable_copy(stream: IO[bytes]) -> IO[bytes]:
    """``stream`` if it can be re-read, else a spooled copy of it."""
    if stream.seekable():
        return stream
    copy = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115
    shutil.copyfileobj(stream, copy)
    copy.seek(0)
    return copy
