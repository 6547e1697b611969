"""bench.engine_feed's smallest case on the session's engine: every contender
serves the same jobs and gives the direct run's tokens back. No figures asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import engine_feed, feed_arrivals, feed_plot
from fabric_worker.dev.redis_server import RedisServer
from tests.vllm.host import EngineHost

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("workload", ["ragged", "classes"])
def test_every_contender_returns_the_direct_runs_tokens(
    host: EngineHost, own_redis_server: RedisServer, workload: str
) -> None:
    # The session's engine (its host has the same call()), not a second start;
    # a server of its own, since the bench empties it between contenders.
    make = {
        "ragged": lambda: engine_feed.ragged_jobs(8, 8),
        "classes": lambda: engine_feed.class_jobs(1)[:8],
    }
    jobs = make[workload]()
    rows = engine_feed.bench(host, own_redis_server.url, workload, jobs, rounds=1)
    assert len(rows) == {"ragged": 4, "classes": 3}[workload]
    for row in rows:
        assert row["tokens_match"], row
        assert row["jobs"] == len(jobs) and row["wall_s"] > 0


def test_arrivals_reach_both_contenders_with_the_direct_runs_tokens(
    host: EngineHost, own_redis_server: RedisServer, tmp_path: Path
) -> None:
    # Workload (c) at its smallest: a capacity run of 6 jobs, then about a second
    # of arrivals at 1.2x that rate to the fabric (capped and not) and the naive worker.
    rows, last = feed_arrivals.bench_arrivals(
        host,
        own_redis_server.url,
        lambda n: engine_feed.ragged_jobs(n, 8),
        duration_s=1.0,
        rounds=1,
        capacity_jobs=6,
    )
    assert [row["contender"] for row in rows] == ["fabric", "fabric uncapped", "naive queue"]
    for row in rows:
        assert row["tokens_match"], row
        assert row["jobs"] == len(last[row["contender"]].submitted) > 0
    plot = tmp_path / "arrivals.png"
    message = feed_plot.save_plot(plot, "arrivals", {n: got.timeline for n, got in last.items()})
    assert message.startswith("plot written") and plot.read_bytes()[:4] == b"\x89PNG"
