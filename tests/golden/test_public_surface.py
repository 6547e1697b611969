"""Golden files of the public surface: what an operator, a producer or a
dashboard sees must not change when the code behind it is reorganised.

Covered: every command's ``--help``; the output of the commands on one fixed
workload (init, submit, inspect, a burst worker on the null engine, results,
dlq list/replay/purge, health, top, acl) against a real redis-server; the key
names the workload leaves in Redis; the exact bytes of a job entry and a
result entry as they lie in their streams.

This test imports nothing of the project: it drives ``python -m fabric_worker``
and reads Redis, so it holds whatever the modules are called.

Masked, because they differ from run to run and nothing else: the server's
port, stream entry ids, wall-clock times (``submitted_at``, ``started_at``,
``finished_at``, ``latency_s``, ``failed_at``, idle and heartbeat ages) and
the rates ``fabric top`` shows. Where a masked value sits in a padded table,
runs of padding are collapsed (the width of a masked value would move every
column after it). Results are sorted by id: their order across lanes is the
workers' completion order.

To regenerate after an intended change: ``GOLDEN_UPDATE=1 pytest tests/golden``,
then review the diff of ``tests/golden/expected/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

pytestmark = pytest.mark.integration

EXPECTED = Path(__file__).parent / "expected"
ROOT = Path(__file__).resolve().parents[2]
NULL_MANIFEST = "engines/manifests/null.json"  # relative to ROOT, where the CLI runs
NAMESPACE = "golden"
UPDATE = os.environ.get("GOLDEN_UPDATE") == "1"

COMMANDS = [
    (),
    ("init",),
    ("submit",),
    ("inspect",),
    ("results",),
    ("worker",),
    ("health",),
    ("top",),
    ("autoscale",),
    ("dlq",),
    ("dlq", "list"),
    ("dlq", "replay"),
    ("dlq", "purge"),
    ("trim",),
    ("acl",),
    ("engine",),
    ("engine", "make-model"),
]

JOBS = [
    {"tokens": [1, 2, 3], "max_new_tokens": 4, "id": "g-a", "class": "sys"},
    {"tokens": [5] * 40, "max_new_tokens": 2, "id": "g-b", "class": "sys"},
    {"tokens": [7] * 100, "max_new_tokens": 3, "id": "g-c", "end_id": 9},
    {"tokens": [11, 12], "max_new_tokens": 1, "id": "g-d"},
]


def check(name: str, actual: str) -> None:
    """Compare with ``expected/<name>`` (or write it under GOLDEN_UPDATE=1)."""
    path = EXPECTED / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"no golden file {path.name}; run with GOLDEN_UPDATE=1 to create it"
    assert actual == path.read_text(), f"{name} differs from its golden file"


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    # A fixed width: click and rich wrap to the terminal's.
    return env | {"FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": NAMESPACE, "COLUMNS": "100"}


def fabric(url: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> str:
    """Run the CLI; its exit status and both streams, as one text."""
    done = subprocess.run(
        [sys.executable, "-m", "fabric_worker", *args],
        input=stdin,
        env=env or env_for(url),
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    return (
        f"$ fabric {' '.join(args)}\nexit {done.returncode}\n"
        f"--- stdout\n{done.stdout.decode()}--- stderr\n{done.stderr.decode()}"
    )


_TIME_FIELDS = ("submitted_at", "started_at", "finished_at", "latency_s", "failed_at")


def mask(text: str, port: int) -> str:
    text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:<PORT>")
    text = re.sub(r"\b\d{10,}-\d+\b", "<ENTRY>", text)
    for name in _TIME_FIELDS:
        text = re.sub(rf'("{name}":)-?[0-9][0-9.e+-]*', r"\1<T>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<TIME>", text)
    text = re.sub(r'("idle_ms":)\d+', r"\1<MS>", text)
    text = re.sub(r'("used_bytes":)\d+', r"\1<BYTES>", text)
    text = re.sub(r"Redis memory: used \d+\.\d MiB", "Redis memory: used <MiB>", text)
    text = re.sub(r"idle \d+\.\ds", "idle <S>", text)
    return re.sub(r"heartbeat \d+\.\d s ago", "heartbeat <S> s ago", text)


def unpad(text: str) -> str:
    return "\n".join(re.sub(r"(?<=\S) {2,}", "  ", line).rstrip() for line in text.split("\n"))


def entry_bytes(fields: dict[bytes, bytes]) -> str:
    """A stream entry's fields as exact bytes (repr), header times masked."""
    lines = []
    for name, value in sorted(fields.items()):
        shown = repr(value)
        if name == b"h":
            for field in _TIME_FIELDS:
                shown = re.sub(rf'("{field}":)-?[0-9][0-9.e+-]*', r"\1<T>", shown)
        lines.append(f"{name.decode()}: {shown}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c) or "fabric")
def test_help(command: tuple[str, ...]) -> None:
    out = fabric("redis://127.0.0.1:1/0", *command, "--help")
    check(f"help/{'-'.join(command) or 'fabric'}.txt", out)


@pytest.fixture
def workload(redis_server: object) -> Iterator[tuple[str, int, redis.Redis]]:
    url: str = redis_server.url  # type: ignore[attr-defined]
    port: int = redis_server.port  # type: ignore[attr-defined]
    client = redis.Redis.from_url(url)
    client.delete(*client.keys(f"{NAMESPACE}:*") or ["-"])
    yield url, port, client
    client.delete(*client.keys(f"{NAMESPACE}:*") or ["-"])
    client.close()


def test_fixed_workload(workload: tuple[str, int, redis.Redis]) -> None:
    url, port, client = workload
    steps: list[str] = []

    def run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> None:
        steps.append(mask(fabric(url, *args, stdin=stdin, env=env), port))

    lines = b"".join(orjson.dumps(job) + b"\n" for job in JOBS)
    run("init", "--lanes", "64,128", "--vocab-size", "1000", "--max-seq-len", "256")
    run("init", "--lanes", "64,128", "--vocab-size", "1000", "--max-seq-len", "256")
    run("submit", "-", stdin=lines)
    run("submit", "-", stdin=lines)
    run("submit", "-", stdin=b'{"tokens": [1000], "max_new_tokens": 1}\n{"tokens": []}\n')
    run("inspect", "--json")

    jobs_64 = client.xrange(f"{NAMESPACE}:{{L64}}:jobs")
    check("entries/job.txt", entry_bytes(jobs_64[0][1]))
    # An entry no producer would write: the worker dead-letters it.
    client.xadd(f"{NAMESPACE}:{{L64}}:jobs", {"h": b"{not json", "t": b"\x01\x00\x00\x00"})

    worker = mask(
        fabric(url, "worker", "--manifest", NULL_MANIFEST, "--burst", "--consumer", "golden"), port
    )
    # The periodic progress line comes or not depending on timing; the others
    # are fixed but for the run time.
    worker = "\n".join(line for line in worker.split("\n") if not line.startswith("jobs/s "))
    steps.append(re.sub(r"exiting after \d+\.\d s", "exiting after <S> s", worker))
    # The heartbeat expires a few seconds after the worker stopped; keep it so
    # that health and top below see the same thing however slow this machine is.
    client.persist(f"{NAMESPACE}:worker:golden")
    keys = sorted(
        f"{k.decode()} {client.type(k).decode()}" for k in client.scan_iter(f"{NAMESPACE}:*")
    )
    check("keys.txt", "\n".join(keys) + "\n")

    result = next(
        fields
        for _, fields in client.xrange(f"{NAMESPACE}:{{L64}}:results")
        if b'"id":"g-a"' in fields[b"h"]
    )
    check("entries/result.txt", entry_bytes(result))

    results = fabric(url, "results")
    head, _, rest = results.partition("--- stdout\n")
    out, _, err = rest.partition("--- stderr\n")
    steps.append(mask(head + "--- stdout\n" + "".join(sorted(out.splitlines(True))), port))
    steps[-1] += "--- stderr\n" + err
    run("results")
    run("inspect", "--json")
    steps.append(unpad(mask(fabric(url, "inspect"), port)))
    steps.append(unpad(mask(fabric(url, "dlq", "list"), port)))
    run("dlq", "list", "--json")
    run("dlq", "list", "--lane", "100")
    run("dlq", "replay", "--all")
    run("health", "--consumer", "golden")
    run("health", "--consumer", "nobody")
    # Stopped, not "(silent)": the CLI calls since the worker stopped take
    # longer than a heartbeat's freshness on a loaded machine, which is the
    # machine's doing, not top's.
    client.hset(f"{NAMESPACE}:worker:golden", "heartbeat_at", repr(time.time()))
    top = mask(fabric(url, "top", "--once"), port)
    top = "\n".join(
        re.sub(r"\d[\d,.]*", "#", line) if "golden" in line else line for line in top.split("\n")
    )
    steps.append(re.sub(r"─+", "─", re.sub(r" +", " ", top)))
    run(
        "acl",
        "--server-version",
        "7.0",
        "--password-env",
        "worker=GOLDEN_PW",
        env=env_for(url) | {"GOLDEN_PW": "fixed"},
    )
    run("dlq", "purge", "--all", "--yes")
    run("dlq", "list")
    check("workload.txt", "\n".join(steps))


def test_acl_password_is_never_shown(workload: tuple[str, int, redis.Redis]) -> None:
    url, port, _ = workload
    env = env_for(url) | {"GOLDEN_PW": "s3cret"}
    out = fabric(
        url, "acl", "--server-version", "7.2", "--password-env", "worker=GOLDEN_PW", env=env
    )
    assert "s3cret" not in out
    check("acl-7.2.txt", mask(out, port))
