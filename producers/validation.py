"""Producer-side validation: every job is checked before anything is written.

Pure code: jobs and the fleet config in, laned, packed jobs or reasons out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fabric_worker.wire.entries import MAX_CLASS_CHARS, JobEntry, is_valid_batch, is_valid_id
from fabric_worker.wire.fleet_config import FleetConfig, padded_cost
from producers.prompts import Prompt, pack_prompts

JSON_FIELDS = frozenset({"tokens", "max_new_tokens", "id", "class", "end_id"})


class JobError(ValueError):
    """One job that cannot be submitted, and why."""

    def __init__(self, reason: str, index: int | None = None) -> None:
        super().__init__(reason if index is None else f"job {index}: {reason}")
        self.reason = reason
        self.index = index


class InvalidJobsError(ValueError):
    """Some jobs of a submit were invalid; nothing was written."""

    def __init__(self, errors: list[JobError]) -> None:
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} invalid job(s), nothing submitted: {shown}{more}")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Job:
    """A pre-tokenized job. ``id`` is generated when absent."""

    tokens: Sequence[int]
    max_new_tokens: int
    id: str | None = None
    prefix_class: str | None = None
    end_id: int | None = None


@dataclass(frozen=True, slots=True)
class LanedJob:
    """A validated job: its lane, its padded cost and its entry."""

    lane: int
    cost_tokens: int
    entry: JobEntry


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_batch(name: str) -> str:
    """Return ``name`` if it can name a batch, else raise JobError."""
    if not is_valid_batch(name):
        raise JobError(f"batch {name!r} must be 1 to 128 characters from [A-Za-z0-9._:-]")
    return name


def new_batch_name(now_unix: float) -> str:
    """A fresh batch name: when it was made, and enough randomness to be unique."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_unix))
    return f"batch-{stamp}-{uuid.uuid4().hex[:8]}"


def validate_jobs(
    jobs: Sequence[Job], config: FleetConfig, *, submitted_at: float = 0.0, batch: str | None = None
) -> tuple[list[LanedJob], list[JobError]]:
    """Check a chunk of jobs against the fleet config: the valid ones laned,
    in order, and one JobError (with its position) for each invalid one.
    The prompts are checked together (:mod:`producers.prompts`), the rest job
    by job. ``batch`` (already checked by :func:`check_batch`) goes into each
    header."""
    packed, prompt_errors = pack_prompts([job.tokens for job in jobs], config.vocab_size)
    laned: list[LanedJob] = []
    errors: list[JobError] = []
    for index, (job, tokens) in enumerate(zip(jobs, packed, strict=True)):
        try:
            if tokens is None:
                raise JobError(str(prompt_errors[index]))
            laned.append(_laned(job, tokens, config, submitted_at, batch))
        except JobError as exc:
            errors.append(JobError(exc.reason, index))
    return laned, errors


def validate_job(
    job: Job, config: FleetConfig, *, submitted_at: float = 0.0, batch: str | None = None
) -> LanedJob:
    """Check one job against the fleet config. Raises JobError with the reason.
    ``batch`` (already checked by :func:`check_batch`) goes into its header."""
    laned, errors = validate_jobs([job], config, submitted_at=submitted_at, batch=batch)
    if errors:
        raise JobError(errors[0].reason)
    return laned[0]


def _laned(
    job: Job, tokens: Prompt, config: FleetConfig, submitted_at: float, batch: str | None
) -> LanedJob:
    """The checks after the prompt's, in the order a job's first error is reported."""
    lane = config.lane_for(len(tokens))
    if lane is None:
        raise JobError(
            f"prompt of {len(tokens)} tokens exceeds the largest lane ({config.max_prompt_tokens})"
        )
    if not _is_int(job.max_new_tokens) or job.max_new_tokens < 1:
        raise JobError(f"max_new_tokens must be an integer >= 1, got {job.max_new_tokens!r}")
    limit = config.max_new_tokens_for(lane)
    if job.max_new_tokens > limit:
        raise JobError(
            f"max_new_tokens {job.max_new_tokens} exceeds {limit}, the most lane {lane} "
            f"allows (max_seq_len {config.max_seq_len})"
        )
    job_id = job.id if job.id is not None else uuid.uuid4().hex
    if not isinstance(job_id, str) or not is_valid_id(job_id):
        raise JobError(f"id {job_id!r} must be 1 to 128 characters from [A-Za-z0-9._:-]")
    if job.prefix_class is not None and (
        not isinstance(job.prefix_class, str) or not 0 < len(job.prefix_class) <= MAX_CLASS_CHARS
    ):
        raise JobError(f"class must be a string of 1 to {MAX_CLASS_CHARS} characters")
    if job.end_id is not None and (
        not _is_int(job.end_id) or not 0 <= job.end_id < config.vocab_size
    ):
        raise JobError(f"end_id {job.end_id!r} must be an integer in [0, {config.vocab_size})")
    entry = JobEntry(
        id=job_id,
        tokens=tokens,
        max_new_tokens=job.max_new_tokens,
        prefix_class=job.prefix_class,
        end_id=job.end_id,
        submitted_at=submitted_at,
        batch=batch,
    )
    return LanedJob(lane=lane, cost_tokens=padded_cost(lane, job.max_new_tokens), entry=entry)


def job_from_json(obj: Any) -> Job:
    """A Job from one decoded JSONL object (fields: tokens, max_new_tokens, id,
    class, end_id). Raises JobError on structure; values are checked later."""
    if not isinstance(obj, dict):
        raise JobError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - JSON_FIELDS)
    if unknown:
        raise JobError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(JSON_FIELDS))})")
    for name in ("tokens", "max_new_tokens"):
        if name not in obj:
            raise JobError(f"missing field {name!r}")
    return Job(
        tokens=obj["tokens"],
        max_new_tokens=obj["max_new_tokens"],
        id=obj.get("id"),
        prefix_class=obj.get("class"),
        end_id=obj.get("end_id"),
    )
