"""vLLM's engine core in the worker's process or in its own: throughput and orphans.

Why the vllm adapter runs vLLM in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
this measures both modes on the same jobs through the adapter
(:class:`engines.vllm.engine.VllmEngine`, and a subclass with
``is_multiprocess = True``), each in a fresh process, and then what a SIGKILL
of the owning process leaves behind in each mode.

    .venv-vllm/bin/python -m bench.vllm_modes [--jobs 256] [--out DIR]

Needs vLLM (its CPU build here: `make .venv-vllm/.installed`). Builds the
tiny128 model of vllm-tiny-cpu.json in DIR when it is not there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from bench.common import MANIFESTS, ROOT

VOCAB = 1024
MAX_PROMPT = 512
MAX_NEW = 48


def manifest_for(model: Path) -> Any:
    from engines.manifest import parse_manifest

    data = json.loads((MANIFESTS / "vllm-tiny-cpu.json").read_text())
    data["model"] = str(model)
    return parse_manifest(data, "vllm-tiny-cpu.json")


def engine_class(mode: str) -> Any:
    from engines.vllm.engine import VllmEngine

    if mode == "in-process":
        return VllmEngine

    class MultiprocessVllmEngine(VllmEngine):
        is_multiprocess = True

    return MultiprocessVllmEngine


def jobs(num: int) -> list[Any]:
    import random

    from engines.contract import EngineRequest
    from producers.workload import trace_lengths

    rng = random.Random(3)
    requests = []
    for i, (prompt_len, output_len) in enumerate(trace_lengths(num)):
        prompt = [rng.randrange(VOCAB) for _ in range(max(1, min(prompt_len, MAX_PROMPT)))]
        requests.append(EngineRequest(i, prompt, max(1, min(output_len, MAX_NEW))))
    return requests


def descendants(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def alive(pids: list[int]) -> list[int]:
    import psutil

    living = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.append(pid)
        except psutil.NoSuchProcess:
            pass
    return living


@click.group(invoke_without_command=True)
@click.option("--jobs", "num_jobs", type=int, default=256, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.pass_context
def main(ctx: click.Context, num_jobs: int, out: Path | None) -> None:
    """Both modes, side by side."""
    if ctx.invoked_subcommand is not None:
        return
    model = (out or Path(tempfile.mkdtemp(prefix="vllm-modes-"))) / "model"
    if not (model / "config.json").is_file():
        from engines.hf.checkpoint import build_checkpoint

        build_checkpoint(model, size="tiny128", seed=0, vocab_size=VOCAB)
    rows = []
    for mode in ("in-process", "multiprocess"):
        serve_run = subprocess.run(
            [sys.executable, "-m", "bench.vllm_modes", "serve", mode, str(model), str(num_jobs)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(serve_run.stdout.strip().splitlines()[-1])
        row.update(orphans(mode, model))
        rows.append(row)
    header = ["mode", "start s", "jobs/s", "output tok/s", "child procs", "left after SIGKILL"]
    print("  ".join(f"{h:>18}" for h in header))
    for r in rows:
        cells = [
            r["mode"],
            f"{r['start_s']:.1f}",
            f"{r['jobs_per_s']:.0f}",
            f"{r['tokens_per_s']:.0f}",
        ]
        cells += [str(r["num_children"]), str(r["num_orphans"])]
        print("  ".join(f"{c:>18}" for c in cells))


def orphans(mode: str, model: Path) -> dict[str, int]:
    """Start an engine in a child, SIGKILL the child, count what of it lives on."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.vllm_modes", "hold", mode, str(model)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:  # vLLM logs to stdout too; "ready": the engine is up
        if line.strip() == "ready":
            break
    else:
        raise RuntimeError(f"{mode}: the engine did not start")
    started = descendants(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 30
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = alive(started)
    for pid in left:  # measured: now clean up what this benchmark started
        os.kill(pid, signal.SIGKILL)
    return {"num_children": len(started), "num_orphans": len(left)}


@main.command()
@click.argument("mode")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("num_jobs", type=int)
def serve(mode: str, model: Path, num_jobs: int) -> None:
    """One mode: start, serve the jobs, print a JSON line."""
    started_s = time.monotonic()
    engine = engine_class(mode)(manifest_for(model))
    start_s = time.monotonic() - started_s
    requests = jobs(num_jobs)
    began_s = time.monotonic()
    engine.submit(requests)
    outputs = []
    while len(outputs) < len(requests):
        outputs += engine.poll(1.0)
    wall_s = time.monotonic() - began_s
    num_children = len(descendants(os.getpid()))
    engine.close()
    generated = sum(len(o.tokens) for o in outputs)
    print(
        json.dumps(
            {
                "mode": mode,
                "start_s": start_s,
                "jobs_per_s": len(requests) / wall_s,
                "tokens_per_s": generated / wall_s,
                "num_children_serving": num_children,
            }
        )
    )


@main.command()
@click.argument("mode")
@click.argument("model", type=click.Path(path_type=Path))
def hold(mode: str, model: Path) -> None:
    """Start an engine, say so, and wait to be killed."""
    engine_class(mode)(manifest_for(model))
    print("ready", flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
