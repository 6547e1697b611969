"""Every shipped manifest loads and starts its engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.clock import VirtualClock
from engines.contract import EngineOutput, EngineRequest
from engines.manifest import MANIFEST_DIR, load_manifest
from engines.registry import create_engine
from engines.sim import expected_output

SHIPPED = sorted(p for p in MANIFEST_DIR.iterdir() if p.suffix in (".json", ".toml"))
# hf needs a checkpoint on disk (tests/integration/test_hf_exact.py builds one and
# starts hf-tiny-cpu.json); trtllm and vllm need their packages (vllm-tiny-cpu.json
# runs in tests/vllm/, in its own environment).
RUNNABLE_ANYWHERE = [p for p in SHIPPED if load_manifest(p).backend in ("sim", "null")]


def test_the_shipped_manifests() -> None:
    assert [p.name for p in SHIPPED] == [
        "hf-tiny-cpu.json",
        "null.json",
        "sim-h100.json",
        "sim-h200.json",
        "sim-small.json",
        "trtllm-llama-3.1-8b-fp8-h200.json",
        "vllm-llama-3.1-8b-h200.json",
        "vllm-tiny-cpu.json",
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_manifest_loads(path: Path) -> None:
    load_manifest(path)


@pytest.mark.parametrize("path", RUNNABLE_ANYWHERE, ids=lambda p: p.name)
def test_manifest_loads_and_its_engine_runs(path: Path) -> None:
    manifest = load_manifest(path)
    options = {"clock": VirtualClock()} if manifest.backend == "sim" else {}
    engine = create_engine(manifest, **options)
    assert engine.capacity == manifest.capacity()
    req = EngineRequest(1, [3, 1, 4, 1, 5], 6)
    engine.submit([req])
    outputs: list[EngineOutput] = []
    while not outputs:
        outputs = engine.poll(timeout_s=1.0)
    assert outputs[0].tokens == expected_output(req.prompt, 6, None)[0]
    engine.close()


def test_h200_manifest_fits_the_trace_and_the_gpu() -> None:
    manifest = load_manifest(MANIFEST_DIR / "sim-h200.json")
    assert (manifest.model, manifest.dtype, manifest.device) == (
        "llama-3.1-8b",
        "fp8",
        "NVIDIA H200",
    )
    assert manifest.max_seq_len >= 14_050 + 1_000  # longest trace prompt + output
    kv_bytes = manifest.kv_cache_tokens * 2 * 32 * 8 * 128  # FP8 KV
    assert 100e9 < kv_bytes < 141e9 - 8.03e9
    assert manifest.kv_cache_tokens % manifest.kv_block_tokens == 0
