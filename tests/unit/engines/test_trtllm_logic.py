"""The trtllm adapter's package-free logic, on any machine.

No stand-in for TensorRT-LLM: these tests call the adapter's own pure
functions (manifest cross-check against a config.json in the shape
TensorRT-LLM writes, per docs/references.md; request and stats mapping) and check
that the engine refuses a bad manifest before it imports tensorrt_llm.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from engines.checkpoint import check_max_positions, check_visible_gpu
from engines.contract import EngineRequest, EngineStats, FinishReason
from engines.manifest import MANIFEST_DIR, Manifest, ManifestError, load_manifest
from engines.registry import create_engine
from engines.requests import finished_output
from engines.trtllm.artifact import (
    ArtifactKind,
    artifact_kind,
    check_engine_dir,
    model_dir,
)
from engines.trtllm.backend import Finished
from engines.trtllm.mapping import (
    NO_END_ID,
    IterationTotals,
    apply_totals,
    executor_request_kwargs,
    fold_iteration_stats,
    parse_iteration_stats,
    sampling_kwargs,
    strip_prompt,
    trtllm_output,
)

# An engine directory's config.json as docs/references.md describes it: Llama-3.1-8B
# built with FP8 weights and KV cache for one GPU.
ENGINE_CONFIG: dict[str, Any] = {
    "version": "0.17.0",
    "pretrained_config": {
        "architecture": "LlamaForCausalLM",
        "dtype": "bfloat16",
        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"},
        "mapping": {"tp_size": 1, "pp_size": 1},
        "vocab_size": 128256,
    },
    "build_config": {
        "max_batch_size": 2048,
        "max_input_len": 16384,
        "max_seq_len": 16384,
        "max_num_tokens": 8192,
        "max_beam_width": 1,
        "kv_cache_type": "PAGED",
        "plugin_config": {
            "paged_kv_cache": True,
            "remove_input_padding": True,
            "tokens_per_block": 32,
            "use_paged_context_fmha": True,
        },
    },
}
FILES = ["config.json", "rank0.engine"]


@pytest.fixture
def shipped() -> Manifest:
    return load_manifest(MANIFEST_DIR / "trtllm-llama-3.1-8b-fp8-h200.json")


def refused_field(
    manifest: Manifest, config: dict[str, Any], files: list[str] = FILES
) -> str | None:
    with pytest.raises(ManifestError) as info:
        check_engine_dir(manifest, config, files)
    return info.value.field


def with_(path: str, value: Any) -> dict[str, Any]:
    """ENGINE_CONFIG with one dotted path set (None deletes it)."""
    config = copy.deepcopy(ENGINE_CONFIG)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return config


def test_the_shipped_manifest_fits_an_engine_built_for_it(shipped: Manifest) -> None:
    assert artifact_kind(ENGINE_CONFIG) is ArtifactKind.ENGINE_DIR
    check_engine_dir(shipped, ENGINE_CONFIG, FILES)
    # asking for less than the engine was built for is fine: the runtime config lowers it
    check_engine_dir(dataclasses.replace(shipped, max_batch_size=256), ENGINE_CONFIG, FILES)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("build_config.max_batch_size", 1024, "max_batch_size"),
        ("build_config.max_num_tokens", 4096, "max_num_tokens"),
        ("build_config.max_seq_len", 8192, "max_seq_len"),
        ("build_config.max_seq_len", None, "max_seq_len"),
        ("build_config.plugin_config.tokens_per_block", 64, "kv_block_tokens"),
        ("pretrained_config.quantization", {"quant_algo": None}, "dtype"),
        ("pretrained_config.quantization.quant_algo", "W4A16_AWQ", "dtype"),
        ("pretrained_config.mapping", {"tp_size": 2, "pp_size": 1}, "model"),
        ("build_config", None, "model"),
    ],
)
def test_each_mismatch_names_its_field(
    shipped: Manifest, path: str, value: Any, field: str
) -> None:
    assert refused_field(shipped, with_(path, value)) == field


def test_plain_dtypes_must_match_the_build(shipped: Manifest) -> None:
    plain = with_("pretrained_config.quantization", {"quant_algo": None})
    check_engine_dir(dataclasses.replace(shipped, dtype="bfloat16"), plain, FILES)
    assert refused_field(dataclasses.replace(shipped, dtype="float16"), plain) == "dtype"
    assert refused_field(dataclasses.replace(shipped, dtype="bfloat16"), ENGINE_CONFIG) == "dtype"


def test_an_engine_dir_needs_its_rank0_engine(shipped: Manifest) -> None:
    assert refused_field(shipped, ENGINE_CONFIG, ["config.json"]) == "model"


def test_model_must_be_a_local_directory(shipped: Manifest, tmp_path: Path) -> None:
    for model in (str(tmp_path / "missing"), "meta-llama/Llama-3.1-8B"):
        with pytest.raises(ManifestError) as info:
            model_dir(dataclasses.replace(shipped, model=model))
        assert info.value.field == "model"
    (tmp_path / "config.json").write_text("{}")
    assert model_dir(dataclasses.replace(shipped, model=str(tmp_path))) == tmp_path


def test_checkpoint_and_device_checks(shipped: Manifest) -> None:
    hf_config = {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 131072}
    assert artifact_kind(hf_config) is ArtifactKind.HF_CHECKPOINT
    check_max_positions(shipped, hf_config)
    with pytest.raises(ManifestError) as info:
        check_max_positions(shipped, {"max_position_embeddings": 8192})
    assert info.value.field == "max_seq_len"
    check_visible_gpu("NVIDIA H200", ["NVIDIA H200"])
    for names in ([], ["NVIDIA H100 80GB HBM3"]):
        with pytest.raises(ManifestError) as info:
            check_visible_gpu("NVIDIA H200", names)
        assert info.value.field == "device"


def test_a_bad_manifest_is_refused_before_tensorrt_llm_is_imported(
    shipped: Manifest, tmp_path: Path
) -> None:
    # model missing: refused here, whether or not tensorrt_llm is installed
    with pytest.raises(ManifestError) as info:
        create_engine(dataclasses.replace(shipped, model=str(tmp_path / "none")))
    assert info.value.field == "model"
    (tmp_path / "config.json").write_text(json.dumps(with_("build_config.max_batch_size", 64)))
    (tmp_path / "rank0.engine").write_bytes(b"")
    with pytest.raises(ManifestError) as info:
        create_engine(dataclasses.replace(shipped, model=str(tmp_path)))
    assert info.value.field == "max_batch_size"


@pytest.mark.parametrize("kind", ["engine_dir", "checkpoint"])
def test_a_fleet_vocabulary_larger_than_the_models_is_refused(
    shipped: Manifest, tmp_path: Path, kind: str
) -> None:
    if kind == "engine_dir":
        config: dict[str, Any] = ENGINE_CONFIG
        (tmp_path / "rank0.engine").write_bytes(b"")
    else:
        config = {"max_position_embeddings": 131072, "vocab_size": 128256}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ManifestError) as info:
        create_engine(dataclasses.replace(shipped, model=str(tmp_path)), fleet_vocab_size=128257)
    assert info.value.field == "model"
    assert "128257" in str(info.value) and "128256" in str(info.value)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_llm") is not None, reason="tensorrt_llm is installed here"
)
def test_without_tensorrt_llm_there_is_no_executor() -> None:
    from engines.trtllm.executor import executor_module

    assert executor_module() is None


def test_sampling_params_are_greedy_with_our_end_id() -> None:
    assert sampling_kwargs(EngineRequest(1, [1, 2], 7, end_id=2)) == {
        "max_tokens": 7,
        "top_k": 1,
        "detokenize": False,
        "end_id": 2,
        "pad_id": 2,
    }
    no_end = sampling_kwargs(EngineRequest(1, [1, 2], 7))
    assert (no_end["end_id"], no_end["ignore_eos"]) == (NO_END_ID, True)
    assert executor_request_kwargs(EngineRequest(5, (3, 4), 9, end_id=1)) == {
        "input_token_ids": [3, 4],
        "max_tokens": 9,
        "end_id": 1,
        "pad_id": 1,
        "client_id": 5,
    }


def test_outputs_take_the_contracts_shape() -> None:
    stop = EngineRequest(1, [1], 8, end_id=9)
    assert finished_output(stop, [4, 9]).tokens == [4, 9]  # end token kept by the engine
    shown = finished_output(stop, [4])  # ...or left out: put back
    assert (shown.tokens, shown.finish_reason) == ([4, 9], FinishReason.STOP)
    assert finished_output(stop, [4, 9, 5]).tokens == [4, 9]
    length = finished_output(EngineRequest(2, [1], 3), [1, 2, 3])
    assert (length.tokens, length.finish_reason) == ([1, 2, 3], FinishReason.LENGTH)
    cancelled = finished_output(EngineRequest(3, [1], 5), [1, 2], is_cancelled=True)
    assert (cancelled.tokens, cancelled.finish_reason) == ([1, 2], FinishReason.CANCELLED)
    early = finished_output(EngineRequest(4, [1], 5), [1, 2])
    assert early.finish_reason is FinishReason.ERROR and early.error
    # the LLM API's own finish reasons: timeout is the request's error
    timed_out = trtllm_output(stop, Finished(1, [4], finish_reason="timeout"))
    assert timed_out.finish_reason is FinishReason.ERROR and "timed out" in (timed_out.error or "")
    told = trtllm_output(stop, Finished(1, [4], finish_reason="cancelled"))
    assert told.finish_reason is FinishReason.CANCELLED
    assert trtllm_output(stop, Finished(1, [4, 9], finish_reason="stop")).tokens == [4, 9]
    failed = trtllm_output(stop, Finished(1, [], error="RequestError: boom"))
    assert (failed.finish_reason, failed.error) == (
        FinishReason.ERROR,
        "trtllm: RequestError: boom",
    )
    assert strip_prompt([7, 8, 1, 2], [7, 8]) == [1, 2]
    assert strip_prompt([1, 2], [7, 8]) is None


def test_iteration_stats_fold_into_ours() -> None:
    llm_api = [
        json.dumps(
            {
                "iter": 0,
                "iterLatencyMS": 12.5,
                "numActiveRequests": 3,
                "kvCacheStats": {"reusedBlocks": 4, "missedBlocks": 6, "cacheHitRate": 0.4},
            }
        ),
        None,  # an empty stats queue's item
        {
            "iter": 1,
            "iterLatencyMS": 7.5,
            "numActiveRequests": 2,
            "kvCacheStats": {"reusedBlocks": 5, "missedBlocks": 7},
        },
    ]
    executor = [
        {
            "iter_latency_ms": 20.0,
            "num_active_requests": 1,
            "kv_cache_stats": {"reused_blocks": 9, "missed_blocks": 8},
        }
    ]
    totals = IterationTotals()
    fold_iteration_stats(totals, parse_iteration_stats(llm_api))
    fold_iteration_stats(totals, parse_iteration_stats(executor))
    # the block counters are running totals, copied into every iteration:
    # the latest is the total, a sum would count old reuse again
    assert totals == IterationTotals(
        busy_s=0.04, num_steps=3, reused_blocks=9, missed_blocks=8, num_active_requests=1
    )
    stats = EngineStats(generated_tokens=11)
    apply_totals(stats, totals)
    assert (stats.busy_s, stats.num_steps, stats.prefix_hit_blocks, stats.prefix_miss_blocks) == (
        0.04,
        3,
        9,
        8,
    )
    assert stats.generated_tokens == 11
    # a request's own cached_tokens, where outputs have it, take precedence
    totals.has_request_blocks = True
    mine = EngineStats(prefix_hit_blocks=2, prefix_miss_blocks=1)
    apply_totals(mine, totals)
    assert (mine.prefix_hit_blocks, mine.prefix_miss_blocks) == (2, 1)
