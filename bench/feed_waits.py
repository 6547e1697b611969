"""How long each job waited inside the fabric worker before the engine got it.

The class queue's age bound (``class_max_wait_s``) orders the worker's read-ahead:
a job held longer than the bound goes before younger ones of other classes. The wait
it governs runs from the job's claim (the result's ``started_at``, when it entered
the queue) to its submit to the engine, found in the timeline by its prompt (every
prompt of the class workload is its own: a random tail follows the shared prefix).
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


def wait_figures(waits: Sequence[float]) -> dict[str, float]:
    return {
        "wait_p99_s": round(percentile(waits, 99), 3),
        "wait_max_s": round(max(waits, default=0.0), 3),
    }
