"""The Azure conversation trace (bench/data/azure-llm-2023-conv.csv) as benchmark input.

The trace gives each request's arrival time, prompt length and output length, not its
contents: prompts are seeded random token ids of the given length (ids below 65,536, so
inside any vocabulary used here and distinct enough that the prefix cache finds nothing
by chance), and the output length is the job's ``max_new_tokens`` (the simulator then
produces exactly that many tokens).
"""

from __future__ import annotations

import csv
import datetime
import random
from array import array
from dataclasses import dataclass

from bench.common import TRACE


@dataclass(frozen=True, slots=True)
class TraceRow:
    index: int
    arrival_s: float  # seconds since the first row of the whole trace
    prompt_tokens: int
    output_tokens: int


def load_trace(limit: int | None = None, *, max_seq_len: int | None = None) -> list[TraceRow]:
    """The first ``limit`` rows (all by default), skipping rows that could never run on an
    engine of ``max_seq_len`` (prompt + output longer than that)."""
    rows: list[TraceRow] = []
    origin = None
    with TRACE.open(newline="") as f:
        for i, rec in enumerate(csv.DictReader(f)):
            stamp = datetime.datetime.fromisoformat(rec["TIMESTAMP"][:26])
            seconds = stamp.timestamp()
            if origin is None:
                origin = seconds
            prompt = max(1, int(rec["ContextTokens"]))
            output = max(1, int(rec["GeneratedTokens"]))
            if max_seq_len is not None and prompt + output > max_seq_len:
                continue
            rows.append(TraceRow(i, seconds - origin, prompt, output))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def prompt_tokens(index: int, length: int, seed: int = 0) -> array[int]:
    """The prompt of trace row ``index``: ``length`` seeded random ids below 65,536."""
    rng = random.Random(seed * 1_000_003 + index)
    return array("I", array("H", rng.randbytes(2 * length)))


def steady_schedule(rows: list[TraceRow], rate_per_s: float) -> list[float]:
    """Arrival offsets (s) keeping the trace's own spacing, compressed to ``rate_per_s``."""
    span = rows[-1].arrival_s - rows[0].arrival_s
    trace_rate = (len(rows) - 1) / span if span > 0 else rate_per_s
    scale = trace_rate / rate_per_s
    return [(r.arrival_s - rows[0].arrival_s) * scale for r in rows]


def bursty_schedule(
    rows: list[TraceRow], rate_per_s: float, *, cycle_s: float = 5.0, on_s: float = 2.0
) -> list[float]:
    """The steady schedule squeezed into the first ``on_s`` of every ``cycle_s``: the same
    mean rate, arriving at ``cycle_s / on_s`` times it, with idle gaps in between."""
    out = []
    for t in steady_schedule(rows, rate_per_s):
        cycle = int(t // cycle_s)
        out.append(cycle * cycle_s + (t - cycle * cycle_s) * on_s / cycle_s)
    return out
