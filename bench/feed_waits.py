"""How long each job waited inside the fabric worker before the engine got it.

The class queue's age bound (``class_max_wait_s``) orders the worker's read-ahead:
a job held longer than the bound goes before younger ones of other classes. The wait
it governs runs from the job's claim (the result's ``started_at``, when it entered
the queue) to its submit to the engine, found in the timeline by its prompt (every
prompt of the class workload is its own: a random tail follows the shared prefix).

No order can keep every job's wait under a bound shorter than the time the engine
takes to serve what is queued ahead of it; what class-first ordering adds, and what
the bound limits, is the time a job is passed over: from the first engine submit of
a job submitted after it to its own (zero under first-come order).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.feed_arrivals import percentile
from bench.feed_timeline import Timeline
from engines.contract import EngineRequest


def queue_waits(
    timeline: Timeline, jobs: Sequence[EngineRequest], claimed_at: dict[int, float]
) -> list[float]:
    """Seconds from claim to engine submit, one per job the engine was given."""
    by_prompt = {tuple(job.prompt): job.request_id for job in jobs}
    waits = []
    for at, prompt in timeline.given:
        job = by_prompt.get(prompt)
        if job is not None and job in claimed_at:
            waits.append(at - claimed_at[job])
    return waits


def passed_over(timeline: Timeline, jobs: Sequence[EngineRequest]) -> list[float]:
    """Per job given to the engine, in ``jobs``' (submit) order: seconds from the
    first engine submit of any later job to its own, or 0 if none went before it."""
    given_at = {prompt: at for at, prompt in reversed(timeline.given)}  # the first submit
    times = [given_at.get(tuple(job.prompt)) for job in jobs]
    passed, first_later = [], float("inf")
    for at in reversed(times):
        if at is not None:
            passed.append(max(0.0, at - first_later))
            first_later = min(first_later, at)
    return passed[::-1]


def wait_figures(waits: Sequence[float], passed: Sequence[float] = ()) -> dict[str, float]:
    figures = {
        "wait_p99_s": round(percentile(waits, 99), 3),
        "wait_max_s": round(max(waits, default=0.0), 3),
    }
    if passed:
        figures["passed_over_max_s"] = round(max(passed), 3)
    return figures
