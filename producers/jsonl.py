"""Reading job files (JSONL) for ``fabric submit``: validate all, then stream.

A file is read twice: once to validate every line (nothing is written if any
line is bad), once to submit in chunks. Memory stays bounded by the chunk, not
the file. Standard input is spooled to a temporary file for the second pass.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import orjson

from fabric_worker.wire.fleet_config import FleetConfig
from producers.validation import Job, JobError, LanedJob, job_from_json, validate_jobs

MAX_LINE_BYTES = 8 * 1024 * 1024  # a 32k-token prompt is ~200 KB of JSON; 8 MB is absurd
VALIDATE_CHUNK = 1000  # lines checked together: enough to amortise numpy, little memory


@dataclass(frozen=True, slots=True)
class LineError:
    line: int  # counted from 1
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def parse_line(raw: bytes) -> Job:
    """One JSONL line to a job, its structure checked (its values are checked
    by :func:`validate_lines`). Raises JobError with the reason."""
    if len(raw) > MAX_LINE_BYTES:
        raise JobError(f"line of {len(raw)} bytes exceeds {MAX_LINE_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JobError(f"not valid JSON: {exc}") from None
    return job_from_json(obj)


def validate_lines(
    lines: Sequence[tuple[int, bytes]],
    config: FleetConfig,
    submitted_at: float,
    batch: str | None = None,
) -> tuple[list[LanedJob], list[LineError]]:
    """(line number, line) pairs to validated jobs, in order, and the errors by
    line. The prompts of the lines are checked together (:func:`validate_jobs`)."""
    errors: list[LineError] = []
    jobs: list[Job] = []
    numbers: list[int] = []
    for number, raw in lines:
        try:
            jobs.append(parse_line(raw))
        except JobError as exc:
            errors.append(LineError(number, exc.reason))
            continue
        numbers.append(number)
    laned, job_errors = validate_jobs(jobs, config, submitted_at=submitted_at, batch=batch)
    errors += [LineError(numbers[e.index], e.reason) for e in job_errors if e.index is not None]
    errors.sort(key=lambda e: e.line)
    return laned, errors


def _lines(stream: IO[bytes], chunk_size: int) -> Iterator[list[tuple[int, bytes]]]:
    """The file's non-blank lines, numbered from 1, in chunks."""
    chunk: list[tuple[int, bytes]] = []
    for number, raw in enumerate(stream, start=1):
        if raw.strip():
            chunk.append((number, raw))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def validate_file(
    stream: IO[bytes], config: FleetConfig, *, on_bytes: Callable[[int], None] | None = None
) -> tuple[int, list[LineError]]:
    """Check every line. Returns (number of jobs, errors). Blank lines are skipped."""
    errors: list[LineError] = []
    num_jobs = 0
    seen: set[str] = set()
    for lines in _lines(stream, VALIDATE_CHUNK):
        if on_bytes:
            on_bytes(sum(len(raw) for _, raw in lines))
        laned, line_errors = validate_lines(lines, config, 0.0)
        errors += line_errors
        bad = {e.line for e in line_errors}
        numbers = [number for number, _ in lines if number not in bad]
        num_jobs += len(laned)
        # Ids given twice in one file would make the file's meaning depend on
        # its order: refuse them like any other bad line.
        for number, job in zip(numbers, laned, strict=True):
            if job.entry.id in seen:
                errors.append(LineError(number, f"id {job.entry.id!r} appears twice in the file"))
            seen.add(job.entry.id)
    errors.sort(key=lambda e: e.line)
    return num_jobs, errors


def iter_chunks(
    stream: IO[bytes], config: FleetConfig, chunk_size: int, *, batch: str | None = None
) -> Iterator[tuple[list[LanedJob], int]]:
    """Yield (validated jobs, bytes read) chunks from a file already validated,
    every job in ``batch`` if one is given."""
    submitted_at = time.time()
    for lines in _lines(stream, chunk_size):
        laned, errors = validate_lines(lines, config, submitted_at, batch)
        if errors:  # the file changed since it was validated
            raise JobError(str(errors[0]))
        yield laned, sum(len(raw) for _, raw in lines)


def seekable_copy(stream: IO[bytes]) -> IO[bytes]:
    """``stream`` if it can be re-read, else a spooled copy of it."""
    if stream.seekable():
        return stream
    copy = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115
    shutil.copyfileobj(stream, copy)
    copy.seek(0)
    return copy
