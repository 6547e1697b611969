"""Prometheus metrics of one worker, read from the worker on each scrape.

A custom collector asks for a :class:`MetricsSnapshot` when
Prometheus scrapes, so no counter is kept twice and nothing runs between
scrapes. The names are a contract: the Grafana dashboard and the autoscaler
use them (``docker/grafana``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = ("ok", "duplicate", "dead_lettered", "fenced")
TOKEN_KINDS = ("prompt", "generated", "padded")


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    jobs: Mapping[str, int]  # by outcome
    tokens: Mapping[str, int]  # by kind
    engine_busy_s: float
    busy_fraction: float
    padding_waste: float
    prefix_hit_ratio: float
    in_flight_tokens: int
    admission_open: bool
    reclaims: int
    lease_lost: int
    replica_shortfalls: int = 0  # completion batches fewer replicas acknowledged than asked
    levels: Mapping[str, int] = field(default_factory=dict)  # "1".."8" -> depth


class WorkerCollector(Collector):
    def __init__(self, source: Callable[[], MetricsSnapshot]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        s = self._source()
        jobs = CounterMetricFamily("fabric_jobs", "Jobs by outcome", labels=["outcome"])
        for outcome in OUTCOMES:
            jobs.add_metric([outcome], s.jobs.get(outcome, 0))
        yield jobs
        tokens = CounterMetricFamily("fabric_tokens", "Tokens by kind", labels=["kind"])
        for kind in TOKEN_KINDS:
            tokens.add_metric([kind], s.tokens.get(kind, 0))
        yield tokens
        yield CounterMetricFamily(
            "fabric_engine_busy_seconds", "Engine busy time", value=s.engine_busy_s
        )
        yield GaugeMetricFamily(
            "fabric_engine_busy_fraction", "Busy fraction since the last report", s.busy_fraction
        )
        yield GaugeMetricFamily(
            "fabric_padding_waste_ratio", "Padded over computed token slots", s.padding_waste
        )
        yield GaugeMetricFamily(
            "fabric_prefix_cache_hit_ratio", "Prefix-cache hits over lookups", s.prefix_hit_ratio
        )
        yield GaugeMetricFamily(
            "fabric_in_flight_tokens", "Padded tokens admitted to the engine", s.in_flight_tokens
        )
        yield GaugeMetricFamily(
            "fabric_admission_open", "1 while the token budget admits", int(s.admission_open)
        )
        levels = GaugeMetricFamily(
            "fabric_level_depth", "Depth of each bounded level", labels=["level"]
        )
        for level, depth in s.levels.items():
            levels.add_metric([level], depth)
        yield levels
        yield CounterMetricFamily("fabric_reclaims", "Entries reclaimed", value=s.reclaims)
        yield CounterMetricFamily("fabric_lease_losses", "Leases lost", value=s.lease_lost)
        yield CounterMetricFamily(
            "fabric_replica_ack_shortfalls",
            "Completion batches acknowledged by fewer replicas than replica_acks",
            value=s.replica_shortfalls,
        )


def serve(
    source: Callable[[], MetricsSnapshot], port: int, addr: str = "0.0.0.0"
) -> CollectorRegistry:
    """Serve ``/metrics`` on ``port`` from a daemon thread; returns the registry."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector(source))
    start_http_server(port, addr=addr, registry=registry)
    return registry
