"""The fabric changes no token: 200 ragged jobs through a real worker on the hf
engine come back exactly as the model's own greedy ``generate`` makes them,
one job at a time.

Real everything: a redis-server started by the test, ``fabric engine
make-model`` for a tiny seeded Llama, a ``fabric worker --burst`` process on
the CPU. A third of the jobs carry an ``end_id`` taken from their own greedy
output, so stopping early is covered too (``generate``'s ``eos_token_id``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

pytest.importorskip("torch", reason="the hf engine needs the hf extra (torch)")
pytest.importorskip("transformers", reason="the hf engine needs the hf extra (transformers)")

import torch
from transformers import AutoModelForCausalLM

from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job
from tests.integration.harness import ROOT, WorkerProcess

pytestmark = pytest.mark.integration

NUM_JOBS = 200
VOCAB = 2048
LANES = (16, 64, 128)
MAX_NEW = 24
MAX_SEQ_LEN = 512


def make_model(out: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fabric_worker",
            "engine",
            "make-model",
            "--out",
            str(out),
            "--size",
            "tiny",
            "--seed",
            "7",
            "--vocab-size",
            str(VOCAB),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )


def write_manifest(path: Path, model_dir: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "backend": "hf",
                "model": str(model_dir),
                "dtype": "float32",
                "max_batch_size": 32,
                "max_num_tokens": 2048,
                "max_seq_len": MAX_SEQ_LEN,
                "kv_cache_tokens": 65536,
                "kv_block_tokens": 16,
                "device": "cpu",
            }
        )
    )
    return path


def generate(model: Any, tokens: list[int], max_new: int, end_id: int | None) -> list[int]:
    """One job alone through the model's own greedy generate."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([tokens]),
            attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=end_id,
            pad_token_id=0,
        )
    result: list[int] = out[0, len(tokens) :].tolist()
    return result


def ragged_jobs(model: Any) -> list[Job]:
    rng = random.Random(11)
    jobs = []
    for i in range(NUM_JOBS):
        # mostly short prompts, some filling the longest lane: ragged within each lane
        length = min(LANES[-1], max(1, int(rng.expovariate(1 / 40))))
        tokens = [rng.randrange(VOCAB) for _ in range(length)]
        max_new = rng.randint(1, MAX_NEW)
        end_id = None
        if i % 3 == 0 and max_new > 2:
            free_run = generate(model, tokens, max_new, None)
            end_id = free_run[rng.randrange(1, max_new - 1)]
        jobs.append(Job(tokens=tokens, max_new_tokens=max_new, id=f"x{i}", end_id=end_id))
    return jobs


def fabric_results(client: redis.Redis, keys: Keys) -> dict[str, tuple[list[int], str]]:
    results: dict[str, tuple[list[int], str]] = {}
    for lane in LANES:
        for _, fields in client.xrange(keys.results(lane)):
            result = decode_result(fields)
            assert result.id not in results, f"two results for {result.id}"
            results[result.id] = (list(result.tokens), result.finish_reason)
    return results


def test_fabric_results_equal_generate_token_for_token(
    redis_server: RedisServer, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker and this process each get one of the two cores: torch's default
    # of one spinning thread per core would make them fight for both.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    model_dir = tmp_path / "model"
    make_model(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    jobs = ragged_jobs(model)

    client = redis.Redis.from_url(redis_server.url)
    config = FleetConfig(
        lanes=LANES, vocab_size=VOCAB, max_seq_len=MAX_SEQ_LEN, backlog_cap_tokens=10**9
    )
    init_namespace(client, keys, config)
    FabricClient(client, keys.namespace).submit(jobs)
    worker = WorkerProcess(
        redis_server.url,
        keys.namespace,
        tmp_path,
        "--burst",
        manifest=str(write_manifest(tmp_path / "hf.json", model_dir)),
        name="hf",
    )
    try:
        # the references are computed while the worker serves the same jobs
        expected = {
            job.id: generate(model, list(job.tokens), job.max_new_tokens, job.end_id)
            for job in jobs
        }
        assert worker.wait(timeout_s=120) == 0, worker.log[-3000:]
    finally:
        worker.stop()

    results = fabric_results(client, keys)
    assert sorted(results) == sorted(expected)
    mismatched = [job_id for job_id, tokens in expected.items() if results[job_id][0] != tokens]
    assert not mismatched, [(i, expected[i], results[i][0]) for i in mismatched[:3]]
    reasons = {job.id: results[job.id or ""][1] for job in jobs}
    for job in jobs:
        tokens = expected[job.id or ""]
        stopped = job.end_id is not None and tokens[-1] == job.end_id
        assert reasons[job.id] == ("stop" if stopped else "length"), job
    num_stopped_early = sum(1 for job in jobs if len(expected[job.id or ""]) < job.max_new_tokens)
    assert num_stopped_early >= 20  # end_id really cut jobs short
    assert "engine busy" in worker.log


def test_gpu_check_runs_its_cpu_path() -> None:
    """bench/gpu_check.sh end to end on the CPU: the three runs side by side."""
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "bench" / "gpu_check.sh"),
            "--device",
            "cpu",
            "--size",
            "tiny",
            "--jobs",
            "24",
            "--max-new-tokens",
            "8",
            "--max-prompt-tokens",
            "256",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    # the tree's GPU bundle, when built (make test builds it), serves the Redis
    bundled = ROOT / "build" / "gpu-bundle" / "bin" / "redis-server"
    if bundled.is_file():
        assert f"redis-server: {bundled}" in result.stdout
    lines = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    assert lines[""].split() == ["fabric", "direct", "generate"]
    assert lines["jobs returned"].split()[-3:] == ["24", "24", "24"]
    assert "fabric / direct" in lines and "fabric / generate" in lines
    # float32 on a CPU: token for token what transformers' own generate gives
    assert lines["fabric identical to generate"].split()[-3:] == ["24", "/", "24"]
    assert lines["direct identical to generate"].split()[-3:] == ["24", "/", "24"]
