"""The vllm adapter's package-free logic, on any machine (no stand-in for vLLM)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engines.contract import EngineRequest, FinishReason
from engines.manifest import MANIFEST_DIR, Manifest, ManifestError, load_manifest
from engines.registry import create_engine
from engines.vllm.mapping import (
    PREFIX_HITS,
    PREFIX_QUERIES,
    check_manifest,
    checkpoint_config,
    engine_args_kwargs,
    finished_output,
    prefix_blocks,
    request_key,
    sampling_kwargs,
)

H200 = ["NVIDIA H200"]
LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 131072}


@pytest.fixture
def shipped() -> Manifest:
    return load_manifest(MANIFEST_DIR / "vllm-llama-3.1-8b-h200.json")


def refused(manifest: Manifest, config: dict[str, object], gpus: list[str]) -> str | None:
    with pytest.raises(ManifestError) as info:
        check_manifest(manifest, config, gpus)
    return info.value.field


def test_engine_args_carry_the_manifest(shipped: Manifest) -> None:
    kwargs = engine_args_kwargs(shipped)
    assert kwargs["skip_tokenizer_init"] is True
    assert kwargs["enable_prefix_caching"] is True
    assert (kwargs["max_num_seqs"], kwargs["max_num_batched_tokens"]) == (1024, 8192)
    assert (kwargs["max_model_len"], kwargs["block_size"]) == (16384, 16)
    assert kwargs["num_gpu_blocks_override"] * 16 == shipped.kv_cache_tokens
    assert kwargs["dtype"] == "bfloat16" and "quantization" not in kwargs
    fp8 = engine_args_kwargs(dataclasses.replace(shipped, dtype="fp8"))
    assert (fp8["dtype"], fp8["quantization"]) == ("auto", "fp8")


def test_manifest_checks_name_the_field(shipped: Manifest) -> None:
    check_manifest(shipped, LLAMA_CONFIG, H200)
    assert refused(shipped, {"max_position_embeddings": 8192}, H200) == "max_seq_len"
    odd = dataclasses.replace(shipped, kv_cache_tokens=880_625)
    assert refused(odd, LLAMA_CONFIG, H200) == "kv_cache_tokens"
    assert refused(shipped, LLAMA_CONFIG, []) == "device"
    assert refused(shipped, LLAMA_CONFIG, ["NVIDIA A100-SXM4-80GB"]) == "device"


def test_model_is_a_local_checkpoint(shipped: Manifest, tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        checkpoint_config(dataclasses.replace(shipped, model=str(tmp_path)))
    assert info.value.field == "model"
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    assert checkpoint_config(dataclasses.replace(shipped, model=str(tmp_path))) == LLAMA_CONFIG


def test_a_bad_manifest_is_refused_before_vllm_is_imported(
    shipped: Manifest, tmp_path: Path
) -> None:
    with pytest.raises(ManifestError) as info:
        create_engine(dataclasses.replace(shipped, model=str(tmp_path / "none")))
    assert info.value.field == "model"


def test_sampling_is_greedy_and_stops_on_our_end_id_only() -> None:
    assert sampling_kwargs(EngineRequest(1, [5], 9, end_id=2)) == {
        "max_tokens": 9,
        "temperature": 0.0,
        "ignore_eos": True,
        "stop_token_ids": [2],
        "detokenize": False,
    }
    assert sampling_kwargs(EngineRequest(1, [5], 9))["stop_token_ids"] == []
    assert request_key(42) == "42"


def test_outputs_take_the_contracts_shape() -> None:
    stop = EngineRequest(1, [1], 8, end_id=9)
    assert finished_output(stop, [4, 9], is_cancelled=False).tokens == [4, 9]
    put_back = finished_output(stop, [4], is_cancelled=False)
    assert (put_back.tokens, put_back.finish_reason) == ([4, 9], FinishReason.STOP)
    length = finished_output(EngineRequest(2, [1], 2), [5, 6], is_cancelled=False)
    assert length.finish_reason is FinishReason.LENGTH
    early = finished_output(EngineRequest(3, [1], 4), [5], is_cancelled=False)
    assert early.finish_reason is FinishReason.ERROR
    assert finished_output(stop, [4], is_cancelled=True).finish_reason is FinishReason.CANCELLED


def test_prefix_counters_become_blocks() -> None:
    metrics = [("vllm:num_requests_running", 3.0), (PREFIX_QUERIES, 1000.0), (PREFIX_HITS, 640.0)]
    assert prefix_blocks(metrics, 16) == (40, 22)
    assert prefix_blocks([], 16) == (0, 0)
