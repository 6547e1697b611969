"""One GPU check: the hf engine fed by the fabric vs the same jobs fed directly.

Run by ``bench/gpu_check.sh`` (which finds Python and redis-server). In one
process it:

1. starts a private redis-server on a free port;
2. builds a seeded Llama checkpoint (``fabric engine make-model``'s builder);
3. runs the trace sample's jobs straight through the hf engine, all
   submitted at once with their lanes, no queue (``direct``);
4. runs the same jobs through the fabric: submitted to Redis, served by an
   in-process burst-mode Worker on a fresh engine (``fabric``);
5. runs the same jobs through transformers' own greedy ``generate``, one job
   at a time (``generate``: the reference for tokens, and the baseline a
   user would write without any batching);
6. prints the three side by side: output tokens/s, the ratios, the GPU busy
   fraction from the engine's ``busy_s`` and, where nvidia-smi exists, its
   sampled utilisation, and how many outputs are identical to ``generate``'s.

Model loading is outside both timings: ``direct`` is timed from its first
submit, ``fabric`` from the moment its engine is ready, each to its last
output. ``--device cpu --size tiny`` runs the same path on a laptop.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from engines.contract import Engine, EngineOutput, EngineRequest
from engines.hf.checkpoint import SIZES, build_checkpoint
from engines.manifest import Manifest, parse_manifest
from engines.registry import create_engine
from fabric_worker.broker.connection import connect, connect_async
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.streams import Broker
from fabric_worker.dev.redis_server import INSTALL_HINT, RedisServer, RedisServerMissing
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from fabric_worker.worker.options import ExitCode, WorkerOptions
from fabric_worker.worker.service import Worker
from producers import FabricClient, Job
from producers.workload import trace_jobs

VOCAB = 32_000
KV_BLOCK_TOKENS = 32


@dataclass(slots=True)
class RunResult:
    name: str
    wall_s: float
    generated_tokens: int
    busy_s: float
    num_outputs: int
    gpu_util: float | None = None  # mean nvidia-smi utilisation.gpu over the run, percent
    tokens: dict[str, list[int]] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def busy_fraction(self) -> float:
        return self.busy_s / self.wall_s if self.wall_s > 0 else 0.0


class UtilSampler:
    """``nvidia-smi`` utilisation.gpu every 200 ms on a thread, when nvidia-smi exists."""

    def __init__(self, gpu_index: int) -> None:
        self._samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        binary = shutil.which("nvidia-smi")
        if binary is None:
            return
        self._proc = subprocess.Popen(
            [
                binary,
                f"--id={gpu_index}",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "-lms",
                "200",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def is_available(self) -> bool:
        return self._proc is not None

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self._samples.append((time.monotonic(), float(line.strip())))
            except ValueError:
                continue

    def mean(self, start_s: float, end_s: float) -> float | None:
        values = [v for t, v in list(self._samples) if start_s <= t <= end_s]
        return sum(values) / len(values) if values else None

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)


def lane_of(length: int, lanes: tuple[int, ...]) -> int:
    return next(lane for lane in lanes if length <= lane)


def make_manifest(
    model_dir: Path, device: str, dtype: str, max_seq_len: int, cpu: bool
) -> Manifest:
    return parse_manifest(
        {
            "backend": "hf",
            "model": str(model_dir),
            "dtype": dtype,
            "max_batch_size": 16 if cpu else 64,
            "max_num_tokens": 4096 if cpu else 16384,
            "max_seq_len": max_seq_len,
            "kv_cache_tokens": 65536 if cpu else 524288,
            "kv_block_tokens": KV_BLOCK_TOKENS,
            "device": device,
        },
        "gpu_check",
    )


def run_direct(
    manifest: Manifest, jobs: list[Job], lanes: tuple[int, ...], sampler: UtilSampler
) -> RunResult:
    engine: Engine = create_engine(manifest)
    # warm up kernels and allocators outside the timing
    engine.submit([EngineRequest(0, [1, 2, 3], 4)])
    while not engine.poll(timeout_s=10.0):
        pass
    before = engine.stats()
    requests = [
        EngineRequest(
            i + 1, list(job.tokens), job.max_new_tokens, pad_to=lane_of(len(job.tokens), lanes)
        )
        for i, job in enumerate(jobs)
    ]
    started = time.monotonic()
    engine.submit(requests)
    outputs: list[EngineOutput] = []
    while len(outputs) < len(requests):
        outputs += engine.poll(timeout_s=10.0)
    wall_s = time.monotonic() - started
    after = engine.stats()
    engine.close()
    ids = {i + 1: job.id or "" for i, job in enumerate(jobs)}
    return RunResult(
        "direct",
        wall_s,
        after.generated_tokens - before.generated_tokens,
        after.busy_s - before.busy_s,
        len(outputs),
        sampler.mean(started, started + wall_s),
        {ids[o.request_id]: o.tokens for o in outputs},
    )


def run_generate(manifest: Manifest, jobs: list[Job], sampler: UtilSampler) -> RunResult:
    """Each job alone through the model's own greedy ``generate`` (no padding,
    so its tokens are the reference the engine's must equal)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cpu" if manifest.device == "cpu" else "cuda"
    model = AutoModelForCausalLM.from_pretrained(
        manifest.model, dtype=getattr(torch, manifest.dtype)
    ).to(device)
    model.eval()

    def one(job: Job) -> list[int]:
        with torch.inference_mode():
            prompt = torch.tensor([list(job.tokens)], device=device)
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=job.max_new_tokens,
                min_new_tokens=job.max_new_tokens,  # the engines run to max_new_tokens too
                do_sample=False,
                pad_token_id=0,
            )
        tokens: list[int] = out[0, prompt.shape[1] :].tolist()
        return tokens

    one(Job(tokens=[1, 2, 3], max_new_tokens=4))  # warm-up outside the timing
    started = time.monotonic()
    tokens = {job.id or "": one(job) for job in jobs}
    wall_s = time.monotonic() - started
    return RunResult(
        "generate",
        wall_s,
        sum(len(t) for t in tokens.values()),
        0.0,
        len(tokens),
        sampler.mean(started, started + wall_s),
        tokens,
    )


def run_fabric(
    url: str,
    manifest: Manifest,
    jobs: list[Job],
    lanes: tuple[int, ...],
    max_seq_len: int,
    sampler: UtilSampler,
) -> RunResult:
    keys = Keys(f"gpucheck-{os.getpid()}-{int(time.time())}")
    client = connect(url)
    config = FleetConfig(
        lanes=lanes, vocab_size=VOCAB, max_seq_len=max_seq_len, backlog_cap_tokens=10**10
    )
    init_namespace(client, keys, config)
    FabricClient(client, keys.namespace).submit(jobs)
    ready_at: list[float] = []

    def factory() -> Engine:
        engine = create_engine(manifest)
        ready_at.append(time.monotonic())
        return engine

    async def serve() -> tuple[ExitCode, Worker]:
        aclient = connect_async(url)
        try:
            options = WorkerOptions(consumer="gpu-check", burst=True, log_every_s=10.0)
            broker = Broker(aclient, keys, options.consumer, retention_s=config.retention_s)
            worker = Worker(broker, config, factory, options)
            return await worker.run(), worker
        finally:
            await aclient.aclose()

    code, worker = asyncio.run(serve())
    ended = time.monotonic()
    if code is not ExitCode.OK or not ready_at:
        raise click.ClickException(f"the fabric worker exited with {code!r}")
    tokens: dict[str, list[int]] = {}
    for lane in lanes:
        for _, fields in client.xrange(keys.results(lane)):
            result = decode_result(fields)
            tokens[result.id] = list(result.tokens)
    stats = worker.engine_stats
    wall_s = ended - ready_at[0]
    return RunResult(
        "fabric",
        wall_s,
        stats.generated_tokens,
        stats.busy_s,
        len(tokens),
        sampler.mean(ready_at[0], ended),
        tokens,
    )


def report(runs: list[RunResult], has_smi: bool, echo: Callable[[str], None]) -> None:
    """One table: a column per run (fabric, direct, generate), then ratios and
    how many outputs equal transformers' own generate."""

    def util(r: RunResult) -> str:
        if not has_smi:
            return "n/a (no nvidia-smi)"
        return "n/a (no samples)" if r.gpu_util is None else f"{r.gpu_util:.1f} %"

    rows = [
        ("", *(r.name for r in runs)),
        ("jobs returned", *(f"{r.num_outputs}" for r in runs)),
        ("output tokens", *(f"{r.generated_tokens}" for r in runs)),
        ("wall s", *(f"{r.wall_s:.2f}" for r in runs)),
        ("output tokens/s", *(f"{r.tokens_per_s:,.0f}" for r in runs)),
        ("busy fraction (busy_s)", *(f"{r.busy_fraction:.3f}" for r in runs)),
        ("nvidia-smi utilisation", *(util(r) for r in runs)),
    ]
    width = max(len(r[0]) for r in rows)
    for name, *cells in rows:
        echo(f"{name.ljust(width)}  " + "  ".join(f"{c:>20}" for c in cells))
    fabric, *others = runs
    for other in others:
        ratio = fabric.tokens_per_s / other.tokens_per_s if other.tokens_per_s else 0.0
        echo(f"{f'fabric / {other.name}'.ljust(width)}  {ratio:>20.3f}")
    reference = runs[-1].tokens
    for r in runs[:-1]:
        same = sum(1 for k, v in reference.items() if r.tokens.get(k) == v)
        label = f"{r.name} identical to {runs[-1].name}"
        echo(f"{label.ljust(width)}  {same:>15} / {len(reference)}")


@click.command()
@click.option(
    "--device", default="cuda", show_default=True, help="cpu, cuda, cuda:N or a GPU name."
)
@click.option("--size", type=click.Choice(list(SIZES)), default="300m", show_default=True)
@click.option("--dtype", default=None, help="[default: bfloat16 on a GPU, float32 on cpu]")
@click.option("--jobs", "num_jobs", type=click.IntRange(1), default=512, show_default=True)
@click.option("--max-prompt-tokens", type=click.IntRange(1), default=2048, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def main(
    device: str,
    size: str,
    dtype: str | None,
    num_jobs: int,
    max_prompt_tokens: int,
    max_new_tokens: int,
    model_dir: Path | None,
) -> None:
    """Fabric-fed vs direct vs transformers' generate on one GPU (or the CPU)."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    cpu = device == "cpu"
    if not cpu and not torch.cuda.is_available():
        raise click.ClickException("no CUDA GPU is visible to torch (use --device cpu to try it)")
    dtype = dtype or ("float32" if cpu else "bfloat16")
    if not cpu and device in ("cuda", "cuda:0"):
        device = torch.cuda.get_device_name(0)  # exercise the manifest's GPU-name check
    standard = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
    lanes = (*(lane for lane in standard if lane < max_prompt_tokens), max_prompt_tokens)
    max_seq_len = min(max_prompt_tokens + max_new_tokens, SIZES[size].max_position_embeddings)
    jobs = [
        Job(
            tokens=job.tokens,
            max_new_tokens=min(job.max_new_tokens, max_new_tokens),
            id=job.id,
            prefix_class=job.prefix_class,
        )
        for job in trace_jobs(num_jobs, vocab_size=VOCAB, max_prompt_tokens=max_prompt_tokens)
        if len(job.tokens) + min(job.max_new_tokens, max_new_tokens) <= max_seq_len
    ]
    echo = click.echo
    echo(
        f"gpu check: {len(jobs)} trace jobs (prompt <= {max_prompt_tokens}, output <= "
        f"{max_new_tokens}), {size} model, {dtype}, device {device!r}"
    )
    try:
        server = RedisServer().start()
    except RedisServerMissing:
        raise click.ClickException(f"redis-server is not on PATH; {INSTALL_HINT}") from None
    workdir = Path(tempfile.mkdtemp(prefix="fabric-gpu-check-"))
    sampler = UtilSampler(0 if cpu else torch.cuda.current_device())
    try:
        out = model_dir or workdir / f"model-{size}"
        started = time.monotonic()
        num_params = build_checkpoint(out, size=size, seed=0, vocab_size=VOCAB)
        echo(
            f"built {num_params / 1e6:,.0f}M parameters in {time.monotonic() - started:.1f} s; "
            f"redis-server on {server.url}"
        )
        manifest = make_manifest(out, device, dtype, max_seq_len, cpu)
        direct = run_direct(manifest, jobs, lanes, sampler)
        gc.collect()
        if not cpu:
            torch.cuda.empty_cache()
        fabric = run_fabric(server.url, manifest, jobs, lanes, max_seq_len, sampler)
        gc.collect()
        if not cpu:
            torch.cuda.empty_cache()
        generated = run_generate(manifest, jobs, sampler)
        echo("")
        runs = [fabric, direct, generated]
        report(runs, sampler.is_available and not cpu, echo)
        if any(r.num_outputs != len(jobs) for r in runs):
            raise click.ClickException("not every job came back")
    finally:
        sampler.close()
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
