"""Intake: what a worker does with an entry it has just claimed.

Accept it (decoded and costed, for the admission queue), dead-letter it with
the reason, or hand it back because the read-ahead has no room. Pure: the
entry and the limits in, a verdict out. The caller carries the verdicts out in
one batched broker call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fabric_worker.core.admission import admission_cost
from fabric_worker.wire.bulk import decode_jobs
from fabric_worker.wire.claims import Claimed, DeadLetter, HandBack
from fabric_worker.wire.entries import EntryError, JobEntry, decode_job, peek_batch, peek_id
from fabric_worker.wire.fleet_config import padded_cost


@dataclass(frozen=True, slots=True)
class Limits:
    """What an entry must fit: the fleet's rules and this engine's size."""

    vocab_size: int
    max_prompt_tokens: int  # the largest lane
    max_deliveries: int
    max_seq_len: int  # the engine's, per sequence
    max_cost_tokens: int  # the budget's high water: a job above it never fits
    pads_prompts: bool = True  # the engine's: whether a job holds its lane boundary


@dataclass(frozen=True, slots=True)
class Accepted:
    """An entry to queue: its job, its padded cost (what the lane's backlog
    holds for it) and what it reserves in this engine's budget."""

    claimed: Claimed
    job: JobEntry
    cost_tokens: int
    budget_tokens: int


Verdict = Accepted | DeadLetter | HandBack


def _dead(c: Claimed, reason: str, *, job_id: str | None, cost_tokens: int = 0) -> DeadLetter:
    batch = peek_batch(c.fields) if c.fields else None
    return DeadLetter(c.lane, c.entry_id, job_id, cost_tokens, reason, c.deliveries, batch=batch)


def decode_all(claimed: Sequence[Claimed], limits: Limits) -> list[JobEntry | EntryError]:
    """Each entry's job or decoding error, for :func:`judge`: one bulk decode."""
    return decode_jobs(
        [c.fields for c in claimed],
        vocab_size=limits.vocab_size,
        max_prompt_tokens=limits.max_prompt_tokens,
    )


def _unservable(
    c: Claimed, limits: Limits, decoded: JobEntry | EntryError | None
) -> tuple[str, JobEntry | None]:
    """Why this entry cannot be served here, or its job."""
    if not c.fields:
        return "entry was deleted while pending", None
    if decoded is None:
        try:
            decoded = decode_job(
                c.fields, vocab_size=limits.vocab_size, max_prompt_tokens=limits.max_prompt_tokens
            )
        except EntryError as exc:
            decoded = exc
    if isinstance(decoded, EntryError):
        return decoded.reason, None
    job = decoded
    if len(job.tokens) > c.lane:
        return f"prompt of {len(job.tokens)} tokens does not belong in lane {c.lane}", None
    need = len(job.tokens) + job.max_new_tokens
    cost = _budget_tokens(c, job, limits)
    if need > limits.max_seq_len or cost > limits.max_cost_tokens:
        return (
            f"job needs {need} tokens ({'padded' if limits.pads_prompts else 'reserves'} "
            f"{cost}); this engine holds at most "
            f"{limits.max_seq_len} per sequence and {limits.max_cost_tokens} in flight"
        ), None
    return "", job


def _budget_tokens(c: Claimed, job: JobEntry, limits: Limits) -> int:
    return admission_cost(
        lane=c.lane,
        prompt_tokens=len(job.tokens),
        max_new_tokens=job.max_new_tokens,
        pads_prompts=limits.pads_prompts,
    )


def judge(
    c: Claimed,
    limits: Limits,
    *,
    can_queue: Callable[[int], bool],
    decoded: JobEntry | EntryError | None = None,
) -> Verdict:
    """The verdict on one claimed entry; ``can_queue(tokens)`` says whether the
    read-ahead has room for a job reserving that many budget tokens, and
    ``decoded`` is the entry's :func:`decode_all` result (None: decoded here).

    Undecodable, out of lane, too big for this engine: dead-lettered with the
    reason (and the id, if its header gives one, but no cost: it was never
    costed by its header). Delivered more than ``max_deliveries`` times:
    dead-lettered with its cost. No room: handed back, no delivery counted.
    """
    reason, job = _unservable(c, limits, decoded)
    if job is None:
        return _dead(c, reason, job_id=peek_id(c.fields))
    cost = padded_cost(c.lane, job.max_new_tokens)
    if c.deliveries > limits.max_deliveries:
        reason = f"delivered {c.deliveries} times (max {limits.max_deliveries})"
        return _dead(c, reason, job_id=job.id, cost_tokens=cost)
    budget_tokens = _budget_tokens(c, job, limits)
    if not can_queue(budget_tokens):
        return HandBack(c.lane, c.entry_id, job.id)
    return Accepted(c, job, cost, budget_tokens)
