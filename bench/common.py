"""What every benchmark shares: the machine line, tables, percentiles, child processes.

Benchmarks measure contenders side by side in one run, on a private ``redis-server``
(:class:`fabric_worker.dev.redis_server.RedisServer`, never the shared one on 6379), and report
ratios: the machine is shared with other people's tests, so absolute numbers drift while
ratios measured minutes apart hold.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
MANIFESTS = ROOT / "engines" / "manifests"
TRACE = BENCH / "data" / "azure-llm-2023-conv.csv"
RESULTS = BENCH / ".results"  # JSON of the last run of each benchmark (git-ignored)


def machine() -> dict[str, str]:
    """Cores, CPU model, RAM, OS, Python, redis-server version and the date."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    try:
        redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2]
    except (OSError, IndexError):
        redis_version = "?"
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kib / 2**20:.1f} GiB",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "redis": redis_version.removeprefix("v="),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def machine_line() -> str:
    m = machine()
    return (
        f"machine: {m['cores']} cores, {m['cpu']}, {m['ram']} RAM, {m['os']}, "
        f"Python {m['python']}, redis-server {m['redis']}; {m['date']}; "
        f"load average {m['load']} (shared machine)"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else float("nan")


def goal_line(name: str, value: float, goal: float, *, at_most: bool = False) -> str:
    """``name: value vs goal (value/goal of it): met|MISSED``."""
    met = value <= goal if at_most else value >= goal
    sign = "<=" if at_most else ">="
    return (
        f"goal {name}: {value:.4g} (goal {sign} {goal:g}; {ratio(value, goal):.2f}x of goal): "
        f"{'met' if met else 'MISSED'}"
    )


def save(name: str, result: dict[str, Any]) -> Path:
    """Write a benchmark's result as JSON under bench/.results/ (for docs and run_all)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2, default=str))
    return path


def python() -> str:
    """The project's interpreter (the one running this benchmark)."""
    return sys.executable


def child(module: str, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``python -m module args`` from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **popen.pop("env", {})}
    return subprocess.Popen([python(), "-m", module, *args], cwd=ROOT, env=env, **popen)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.01):
    """Poll ``predicate`` until it holds; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def read_json_line(stream: Any, prefix: str = "RESULT ") -> dict[str, Any]:
    """The JSON object a child printed on a line starting with ``prefix``."""
    for raw in stream.decode(errors="replace").splitlines()[::-1]:
        if raw.startswith(prefix):
            return json.loads(raw[len(prefix) :])  # type: ignore[no-any-return]
    raise RuntimeError(f"no {prefix.strip()} line in the child's output:\n{stream[-3000:]!r}")


def thread_cpu_s(tid: int) -> float:
    """CPU seconds (user + system) a thread of this process has used, from /proc."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_drain(
    remaining: Callable[[], int],
    num_jobs: int,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    every_s: float = 0.005,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Time a worker process draining ``num_jobs`` jobs, by polling ``remaining()``.

    The clock starts at the first poll that sees a job taken (remaining below
    ``num_jobs``) and stops at the first that sees none left, so interpreter start-up
    and the worker's own start-up are not counted for anyone; the jobs done before the
    first poll that saw progress are not counted either. The same function times every
    contender, fabric, ceiling and peers alike. ``pids`` names processes whose CPU time
    over the same window is reported (``cpu_s``).
    """
    spawned = time.monotonic()
    deadline = spawned + timeout_s
    first_s = first_left = None
    while True:
        now = time.monotonic()
        left = remaining()
        if first_s is None and left < num_jobs:
            first_s, first_left = now, left
            cpu_first = {name: cpu_s(pid) for name, pid in (pids or {}).items()}
        if left <= 0:
            break
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}; {left} jobs left")
        if now > deadline:
            raise TimeoutError(f"{left} of {num_jobs} jobs left after {timeout_s:g} s")
        time.sleep(every_s)
    assert first_s is not None and first_left is not None
    cpu = {name: cpu_s(pid) - cpu_first[name] for name, pid in (pids or {}).items()}
    serve_s = max(now - first_s, 1e-9)
    return {
        "cpu_s": cpu,
        "startup_s": first_s - spawned,
        "serve_s": serve_s,
        "jobs_per_s": first_left / serve_s,
        "to_last_s": now - spawned,
    }


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """SIGTERM, wait, SIGKILL if it will not go. Returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
