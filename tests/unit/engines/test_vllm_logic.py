"""The vllm adapter's package-free logic, on any machine (no stand-in for vLLM).

The adapter against the real vLLM (its CPU build) is tested in tests/vllm/.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engines.contract import EngineRequest, FinishReason
from engines.manifest import MANIFEST_DIR, Manifest, ManifestError, load_manifest
from engines.registry import create_engine
from engines.requests import prefix_blocks
from engines.vllm.mapping import (
    check_manifest,
    check_platform,
    engine_args_kwargs,
    kv_bytes_per_token,
    request_key,
    sampling_kwargs,
    vllm_output,
)

H200 = ["NVIDIA H200"]
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 32,
}


@pytest.fixture
def shipped() -> Manifest:
    return load_manifest(MANIFEST_DIR / "vllm-llama-3.1-8b-h200.json")


@pytest.fixture
def cpu() -> Manifest:
    return load_manifest(MANIFEST_DIR / "vllm-tiny-cpu.json")


def refused(manifest: Manifest, gpus: list[str]) -> str | None:
    with pytest.raises(ManifestError) as info:
        check_manifest(manifest, LLAMA_CONFIG, gpus)
    return info.value.field


def test_engine_args_carry_the_manifest(shipped: Manifest) -> None:
    kwargs = engine_args_kwargs(shipped, LLAMA_CONFIG)
    assert kwargs["skip_tokenizer_init"] is True
    assert kwargs["enable_prefix_caching"] is True
    assert (kwargs["max_num_seqs"], kwargs["max_num_batched_tokens"]) == (1024, 8192)
    assert (kwargs["max_model_len"], kwargs["block_size"]) == (16384, 16)
    assert kwargs["num_gpu_blocks_override"] * 16 == shipped.kv_cache_tokens
    assert kwargs["dtype"] == "bfloat16" and "quantization" not in kwargs
    assert "kv_cache_memory_bytes" not in kwargs
    fp8 = engine_args_kwargs(dataclasses.replace(shipped, dtype="fp8"), LLAMA_CONFIG)
    assert (fp8["dtype"], fp8["quantization"]) == ("auto", "fp8")


def test_on_the_cpu_the_kv_cache_is_sized_from_the_manifest(cpu: Manifest) -> None:
    # 2 x 32 layers x 8 KV heads x 128 x 2 bytes: 128 KiB per BF16 token (docs/engines.md)
    assert kv_bytes_per_token(LLAMA_CONFIG, "bfloat16") == 128 * 1024
    tiny = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    tiny_kv = kv_bytes_per_token({**tiny, "hidden_size": 128}, "float32")
    assert tiny_kv == 2 * 2 * 2 * 32 * 4
    kwargs = engine_args_kwargs(cpu, {**tiny, "hidden_size": 128})
    assert kwargs["kv_cache_memory_bytes"] == cpu.kv_cache_tokens * tiny_kv
    # on the CPU this knob is a share of the machine's memory: left to vLLM
    assert "gpu_memory_utilization" not in kwargs


def test_manifest_checks_name_the_field(shipped: Manifest, cpu: Manifest) -> None:
    check_manifest(shipped, LLAMA_CONFIG, H200)
    odd = dataclasses.replace(shipped, kv_cache_tokens=880_625)
    assert refused(odd, H200) == "kv_cache_tokens"
    assert refused(shipped, []) == "device"
    assert refused(shipped, ["NVIDIA A100-SXM4-80GB"]) == "device"
    check_manifest(cpu, LLAMA_CONFIG, [])  # no GPU needed for "cpu"
    block16 = dataclasses.replace(cpu, kv_block_tokens=16, kv_cache_tokens=65536)
    assert refused(block16, []) == "kv_block_tokens"
    assert refused(dataclasses.replace(cpu, dtype="fp8"), []) == "dtype"


def test_the_device_must_match_the_installed_build(shipped: Manifest, cpu: Manifest) -> None:
    check_platform(cpu, is_cpu_platform=True)
    check_platform(shipped, is_cpu_platform=False)
    for manifest, is_cpu in ((cpu, False), (shipped, True)):
        with pytest.raises(ManifestError) as info:
            check_platform(manifest, is_cpu_platform=is_cpu)
        assert info.value.field == "device"


def test_bad_manifests_are_refused_before_vllm_is_imported(
    shipped: Manifest, cpu: Manifest, tmp_path: Path
) -> None:
    with pytest.raises(ManifestError) as info:
        create_engine(dataclasses.replace(shipped, model=str(tmp_path / "none")))
    assert info.value.field == "model"
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA_CONFIG, "vocab_size": 1024}))
    local = dataclasses.replace(cpu, model=str(tmp_path))
    with pytest.raises(ManifestError) as info:
        create_engine(local, fleet_vocab_size=2048)
    assert info.value.field == "model"
    assert "2048" in str(info.value) and "1024" in str(info.value)


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


def test_finish_reasons_map_explicitly() -> None:
    stop = EngineRequest(1, [1], 8, end_id=9)
    assert vllm_output(stop, [4, 9], "stop").finish_reason is FinishReason.STOP
    length = vllm_output(EngineRequest(2, [1], 2), [5, 6], "length")
    assert (length.tokens, length.finish_reason) == ([5, 6], FinishReason.LENGTH)
    assert vllm_output(stop, [4], "abort").finish_reason is FinishReason.CANCELLED
    error = vllm_output(stop, [4], "error")
    assert error.finish_reason is FinishReason.ERROR and error.error
    # shapes that contradict the reason are that request's error, named
    capped = vllm_output(EngineRequest(3, [1], 4), [5], "length")
    assert capped.finish_reason is FinishReason.ERROR and "1 of 4" in (capped.error or "")
    assert vllm_output(stop, [4, 5], "stop").finish_reason is FinishReason.ERROR
    odd = vllm_output(stop, [4], "repetition")
    assert odd.finish_reason is FinishReason.ERROR and "repetition" in (odd.error or "")


def test_prefix_hits_are_whole_blocks_of_each_prompt() -> None:
    assert prefix_blocks(100, 64, 32) == (2, 1)  # 3 full blocks, 2 from the cache
    assert prefix_blocks(100, None, 32) == (0, 3)
    assert prefix_blocks(31, 0, 32) == (0, 0)
