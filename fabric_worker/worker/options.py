"""A worker's options, their defaults (written once, here) and its exit codes."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from enum import IntEnum

from fabric_worker.core.policy import DispatchPolicy
from fabric_worker.telemetry.status import HEARTBEAT_EVERY_S

DEFAULT_GRACE_S = 30.0
DEFAULT_OUTAGE_BUDGET_S = 30.0
DEFAULT_LOG_EVERY_S = 5.0


class ExitCode(IntEnum):
    OK = 0
    CONFIG = 2
    ENGINE = 3
    BROKER = 4
    INVARIANT = 5


def default_consumer() -> str:
    """Unique per process: host, pid and start time."""
    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    consumer: str
    burst: bool = False
    max_tps: bool = False
    lane_max_wait_s: float = 2.0
    class_max_wait_s: float = 5.0
    log_every_s: float = DEFAULT_LOG_EVERY_S
    grace_s: float = DEFAULT_GRACE_S
    outage_budget_s: float = DEFAULT_OUTAGE_BUDGET_S
    teardown_deadline_s: float = 4.5  # fatal errors exit within 5 s, watchdog included
    block_ms: int = 200
    reclaim_every_s: float | None = None  # default: a quarter of the lease, at most 1 s
    metrics_port: int | None = None  # serve Prometheus /metrics here
    heartbeat_every_s: float = HEARTBEAT_EVERY_S
    read_ahead_budgets: int | None = None  # see DispatchPolicy
    arrival_order: bool | None = None  # see DispatchPolicy
    share_prefixes: bool | None = None  # see DispatchPolicy
    max_in_engine: int | None = None  # see DispatchPolicy

    @property
    def dispatch_policy(self) -> DispatchPolicy:
        return DispatchPolicy(
            max_tps=self.max_tps,
            lane_max_wait_s=self.lane_max_wait_s,
            class_max_wait_s=self.class_max_wait_s,
            read_ahead_budgets=self.read_ahead_budgets,
            arrival_order=self.arrival_order,
            share_prefixes=self.share_prefixes,
            max_in_engine=self.max_in_engine,
        )
