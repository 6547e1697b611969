"""bench.engine_feed's tables: one fixed-width line per contender (or per round)."""

from __future__ import annotations

from typing import Any


def table(rows: list[dict]) -> str:
    """The rows as a fixed-width table, one line per contender; wait99 and waitmax:
    the fabric's queue wait per job, claim to engine submit; passed: the longest a
    job was passed over by later ones (bench.feed_waits)."""
    head = f"{'workload':<8} {'contender':<30} {'jobs':>5} {'wall s':>7} {'tok/s':>8} "
    head += f"{'hit rate':>8} {'vs FIFO':>7} {'busy':>5} {'1st sub':>7} {'gaps s':>6} "
    head += f"{'short s':>7} {'tail s':>6} {'call s':>6} {'steps':>5} {'eng cpu':>7} "
    lines = [head + f"{'cpu/job':>7} {'wait99':>6} {'waitmax':>7} {'passed':>6} tokens"]
    for r in rows:
        lines.append(
            f"{r['workload']:<8} {r['contender']:<30} {r['jobs']:>5} {r['wall_s']:>7.3f} "
            f"{r['output_tok_s']:>8.0f} {r['prefix_hit_rate']:>8.2f} {r['vs_direct_fifo']:>7.2f} "
            f"{r['busy_fraction']:>5.2f} {r['first_submit_s']:>7.3f} {r['gap_held_s']:>6.3f} "
            f"{r['short_s']:>7.3f} {r['tail_s']:>6.3f} {r['call_s']:>6.3f} "
            f"{r['num_steps']:>5} {r['engine_cpu_s']:>7.3f} "
            f"{r.get('worker_cpu_us_per_job', '-'):>7} {r.get('wait_p99_s', '-'):>6} "
            f"{r.get('wait_max_s', '-'):>7} {r.get('passed_over_max_s', '-'):>6} "
            + ("match" if r["tokens_match"] else "DIFFER")
        )
    return "\n".join(lines)


def arrivals_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'contender':<15} {'round':>5} {'jobs':>5} {'jobs/s':>7} {'cap/s':>6} "
    head += f"{'busy q':>6} {'p50 s':>6} {'p90 s':>6} {'p99 s':>6} {'steps':>5} {'in eng':>6}"
    head += f" {'cpu/job':>7}"
    lines = [head + " tokens"]
    for r in rows:
        lines.append(
            f"{r['contender']:<15} {r['round']:>5} {r['jobs']:>5} {r['jobs_s']:>7.2f} "
            f"{r['capacity_jobs_s']:>6.2f} {r['busy_queued']:>6.3f} {r['p50_s']:>6.3f} "
            f"{r['p90_s']:>6.3f} {r['p99_s']:>6.3f} {r['num_steps']:>5} "
            f"{r.get('max_in_engine', '-'):>6} {r.get('worker_cpu_us_per_job', '-'):>7} "
            + ("match" if r["tokens_match"] else "DIFFER")
        )
    return "\n".join(lines)
