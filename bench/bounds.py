"""What the simulated H200 can do on the saturation jobs, engine only: the bounds a worker
works within. No Redis, no worker, a virtual clock (only the engine's own time counts), so
these figures are exact and repeatable.

    python -m bench.bounds [--jobs 600]

- in-flight batching: every job at once (the engine's capacity on this mix) against at
  most 32 in flight refilled in arrival order (what the naive worker can at best reach):
  the ratio is the most any worker can gain over the naive one on this trace.
- static batching: how padding waste and throughput move with the order and grouping the
  engine is fed: arrival order, by lane, by lane then output length, and in fine 2-D
  buckets (prompt to 32 tokens, output to 16), whole or in batches of 64.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import MANIFESTS, machine_line, ratio, table
from bench.trace import TraceRow, load_trace, prompt_tokens
from engines.clock import VirtualClock
from engines.contract import EngineRequest
from engines.manifest import load_manifest
from engines.sim import SimEngine
from fabric_worker.wire.fleet_config import DEFAULT_LANES

MANIFEST = MANIFESTS / "sim-h200.json"


def lane_of(prompt: int) -> int:
    return DEFAULT_LANES[min(bisect.bisect_left(DEFAULT_LANES, prompt), len(DEFAULT_LANES) - 1)]


def replay(
    rows: Sequence[TraceRow],
    batching: str,
    *,
    max_in_flight: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Feed the engine ``rows`` in the given order: all at once, at most ``max_in_flight``
    at a time, or ``batch_size`` at a time whenever the engine has nothing waiting."""
    clock = VirtualClock()
    engine = SimEngine(load_manifest(MANIFEST), clock=clock, batching=batching)
    requests = [
        EngineRequest(i + 1, prompt_tokens(r.index, r.prompt_tokens), r.output_tokens)
        for i, r in enumerate(rows)
    ]
    sent = num_done = 0
    if max_in_flight is None and batch_size is None:
        engine.submit(requests)
        sent = len(requests)
    while num_done < len(requests):
        if max_in_flight is not None and sent - num_done < max_in_flight:
            take = min(max_in_flight - (sent - num_done), len(requests) - sent)
            engine.submit(requests[sent : sent + take])
            sent += take
        elif (
            batch_size is not None
            and sent < len(requests)
            and engine.stats().extra["num_waiting"] == 0
        ):
            engine.submit(requests[sent : sent + batch_size])
            sent += batch_size
        num_done += len(engine.poll(0.0))
    stats = engine.stats()
    return {
        "padding": ratio(stats.padded_tokens, stats.computed_tokens),
        "tokens_per_s": stats.generated_tokens / clock.now_s(),
        "req_per_s": len(rows) / clock.now_s(),
    }


ORDERS: dict[str, Callable[[TraceRow], Any]] = {
    "arrival order": lambda r: r.arrival_s,
    "by lane (powers of 2)": lambda r: (lane_of(r.prompt_tokens), r.arrival_s),
    "by lane, then output length": lambda r: (lane_of(r.prompt_tokens), r.output_tokens),
    "2-D buckets (prompt/32, output/16)": lambda r: (r.prompt_tokens // 32, r.output_tokens // 16),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=600)
    args = parser.parse_args(argv)
    rows = load_trace(args.jobs, max_seq_len=load_manifest(MANIFEST).max_seq_len)
    every = replay(rows, "inflight")
    capped = replay(rows, "inflight", max_in_flight=32)
    inflight_rows = [
        ["every job at once (capacity)", every["req_per_s"], every["tokens_per_s"]],
        ["at most 32 in flight, arrival order", capped["req_per_s"], capped["tokens_per_s"]],
        [
            "ratio",
            f"{ratio(every['req_per_s'], capped['req_per_s']):.2f}x",
            f"{ratio(every['tokens_per_s'], capped['tokens_per_s']):.2f}x",
        ],
    ]
    static_rows = []
    for name, key in ORDERS.items():
        ordered = sorted(rows, key=key)
        for batch in (None, 64):
            r = replay(ordered, "static", batch_size=batch)
            how = "all at once" if batch is None else f"batches of {batch}"
            static_rows.append([name, how, f"{r['padding']:.4f}", r["tokens_per_s"]])
    r = replay(rows, "static", max_in_flight=32)
    static_rows.append(
        ["arrival order", "at most 32 in flight", f"{r['padding']:.4f}", r["tokens_per_s"]]
    )
    print()
    print(f"bench.bounds: the first {len(rows)} trace jobs, sim-h200, engine only, virtual clock")
    print(machine_line())
    print(table(["in-flight batching", "req/s", "output tok/s"], inflight_rows))
    print()
    print(table(["static batching: order", "fed", "padding waste", "output tok/s"], static_rows))
    return {"inflight": inflight_rows, "static": static_rows}


if __name__ == "__main__":
    main(sys.argv[1:])
