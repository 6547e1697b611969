"""What the autoscaler acts through: local worker processes, or a metrics endpoint.

``LocalActuator`` spawns one ``fabric worker`` per GPU id (each with its own
``CUDA_VISIBLE_DEVICES``), scales down with SIGTERM so workers hand their work
back, and replaces a worker that died. ``MetricsActuator`` only serves the
desired count (``/desired``, for KEDA's metrics-api scaler) and Prometheus
gauges (``/metrics``); something else (KEDA) starts the workers.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest


@dataclass(slots=True)
class _Proc:
    slot: str  # GPU id, or a plain index without --gpus
    consumer: str
    process: subprocess.Popen[bytes]
    stopping: bool = False


class LocalActuator:
    """Worker processes on this machine, at most one per GPU id."""

    def __init__(
        self,
        worker_args: Sequence[str],
        *,
        gpus: Sequence[str] | None,
        max_workers: int,
        env: Mapping[str, str] | None = None,
        name_prefix: str = "auto",
        log: Callable[[str], None] = print,
        log_dir: str | None = None,
    ) -> None:
        self.worker_args = list(worker_args)
        self.slots = list(gpus) if gpus else [str(i) for i in range(max_workers)]
        self.uses_gpus = bool(gpus)
        self.env = dict(env if env is not None else os.environ)
        self.name_prefix = name_prefix
        self.log = log
        self.log_dir = log_dir
        self.procs: list[_Proc] = []
        self._serial = itertools.count(1)
        self.num_replaced = 0

    @property
    def running(self) -> list[_Proc]:
        return [p for p in self.procs if not p.stopping and p.process.poll() is None]

    def reap(self) -> None:
        """Forget exited workers; one that exited without being asked is reported."""
        for proc in list(self.procs):
            code = proc.process.poll()
            if code is None:
                continue
            self.procs.remove(proc)
            if not proc.stopping:
                self.num_replaced += 1
                self.log(f"autoscale: worker {proc.consumer} died (exit {code}); replacing it")

    def scale_to(self, desired: int) -> None:
        self.reap()
        desired = min(desired, len(self.slots))
        while len(self.running) < desired:
            self._start()
        surplus = self.running[desired:]
        for proc in reversed(surplus):
            proc.stopping = True
            proc.process.send_signal(signal.SIGTERM)  # hands unstarted work back
            self.log(f"autoscale: stopping worker {proc.consumer}")

    def _start(self) -> None:
        busy = {p.slot for p in self.procs}  # stopping ones still hold their GPU
        slot = next(s for s in self.slots if s not in busy) if len(busy) < len(self.slots) else None
        if slot is None:
            return
        consumer = f"{self.name_prefix}-{slot}-{next(self._serial)}"
        env = dict(self.env)
        if self.uses_gpus:
            env["CUDA_VISIBLE_DEVICES"] = slot
        out = (
            open(os.path.join(self.log_dir, f"{consumer}.log"), "wb")  # noqa: SIM115
            if self.log_dir
            else subprocess.DEVNULL
        )
        process = subprocess.Popen(
            [*self.worker_args, "--consumer", consumer], env=env, stdout=out, stderr=out
        )
        self.procs.append(_Proc(slot, consumer, process))
        self.log(f"autoscale: started worker {consumer} (slot {slot})")

    def close(self, timeout_s: float = 30.0) -> None:
        for proc in self.procs:
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.process.kill()
        self.procs.clear()


class MetricsActuator:
    """Serves the desired worker count for KEDA, and Prometheus gauges."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        self.registry = CollectorRegistry()
        self.desired_gauge = Gauge(
            "fabric_desired_workers", "Workers the backlog needs", registry=self.registry
        )
        self.backlog_gauge = Gauge(
            "fabric_backlog_tokens",
            "Padded tokens queued or in flight",
            ["lane"],
            registry=self.registry,
        )
        self.desired = 0
        actuator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/desired":
                    body = json.dumps({"desired_workers": actuator.desired}).encode()
                    kind = "application/json"
                elif self.path.split("?")[0] == "/metrics":
                    body, kind = generate_latest(actuator.registry), CONTENT_TYPE_LATEST
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the log

        self.server = ThreadingHTTPServer((addr, port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def observe(self, backlogs: Mapping[int, int]) -> None:
        for lane, tokens in backlogs.items():
            self.backlog_gauge.labels(lane=str(lane)).set(tokens)

    def scale_to(self, desired: int) -> None:
        self.desired = desired
        self.desired_gauge.set(desired)

    def reap(self) -> None:
        pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
