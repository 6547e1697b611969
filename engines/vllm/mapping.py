"""Our manifest, requests and stats in vLLM's terms, and back. No vllm import.

docs/references.md (vLLM V1) states: ``TokensPrompt(prompt_token_ids=...)``,
``skip_tokenizer_init=True``, ``LLMEngine.add_request(request_id, prompt,
params, priority=0)``, ``step()``, ``abort_request(ids)``,
``has_unfinished_requests()``, the budget names ``max_num_batched_tokens``
and ``max_num_seqs``, prefix caching on by default, and the counters
``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``. Everything else
here is marked as an assumption where it is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engines.contract import EngineOutput, EngineRequest, FinishReason
from engines.manifest import Manifest, ManifestError

PREFIX_QUERIES = "vllm:prefix_cache_queries"
PREFIX_HITS = "vllm:prefix_cache_hits"
GPU_MEMORY_UTILIZATION = 0.9


def checkpoint_config(manifest: Manifest) -> dict[str, Any]:
    """The local checkpoint's config.json; nothing is downloaded."""
    path = Path(manifest.model).expanduser() / "config.json"
    if not path.is_file():
        raise ManifestError(
            None, "model", f"{manifest.model!r} is not a local checkpoint directory"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(None, "model", f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(None, "model", f"{path} is not an object")
    return data


def check_manifest(manifest: Manifest, config: Mapping[str, Any], gpu_names: Sequence[str]) -> None:
    """Refuse what the checkpoint or the visible GPU cannot serve, naming the field."""
    max_positions = config.get("max_position_embeddings")
    if isinstance(max_positions, int) and manifest.max_seq_len > max_positions:
        raise ManifestError(
            None,
            "max_seq_len",
            f"{manifest.max_seq_len} exceeds the checkpoint's max_position_embeddings "
            f"({max_positions})",
        )
    if manifest.kv_cache_tokens % manifest.kv_block_tokens:
        raise ManifestError(
            None,
            "kv_cache_tokens",
            f"{manifest.kv_cache_tokens} is not a whole number of "
            f"{manifest.kv_block_tokens}-token blocks",
        )
    if not gpu_names:
        raise ManifestError(None, "device", f"{manifest.device!r}: no GPU is visible")
    if gpu_names[0] != manifest.device:
        raise ManifestError(
            None, "device", f"{manifest.device!r} is not the visible GPU ({gpu_names[0]!r})"
        )


def engine_args_kwargs(manifest: Manifest) -> dict[str, Any]:
    """``EngineArgs(**kwargs)`` for this manifest.

    The budget names and skip_tokenizer_init are docs/references.md's. Assumed
    (long-standing EngineArgs fields, not stated there): ``max_model_len``,
    ``block_size``, ``enable_prefix_caching``, ``num_gpu_blocks_override``
    (caps the KV cache at the manifest's tokens), ``gpu_memory_utilization``,
    ``dtype``, ``quantization="fp8"`` for FP8 and ``disable_log_stats=False``
    (so the prefix-cache counters are kept).
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
        "gpu_memory_utilization": GPU_MEMORY_UTILIZATION,
        "disable_log_stats": False,
    }
    if manifest.dtype == "fp8":
        kwargs.update(dtype="auto", quantization="fp8")
    else:
        kwargs["dtype"] = manifest.dtype
    return kwargs


def sampling_kwargs(request: EngineRequest) -> dict[str, Any]:
    """``SamplingParams(**kwargs)``: greedy, our end_id only.

    Assumed fields: ``temperature=0`` is greedy, ``ignore_eos`` stops the
    model's own EOS from ending a job, ``stop_token_ids`` is the job's
    end_id, ``detokenize=False`` as there is no tokenizer.
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


def finished_output(
    request: EngineRequest, tokens: list[int], *, is_cancelled: bool
) -> EngineOutput:
    """Our output for a finished vLLM request (see engines.trtllm.mapping.finished_output:
    the same rules, kept here so the two adapters do not import each other)."""
    rid = request.request_id
    if is_cancelled:
        return EngineOutput(rid, tokens[: request.max_new_tokens], FinishReason.CANCELLED)
    end_id = request.end_id
    if end_id is not None and end_id in tokens[: request.max_new_tokens]:
        return EngineOutput(rid, tokens[: tokens.index(end_id) + 1], FinishReason.STOP)
    if len(tokens) >= request.max_new_tokens:
        return EngineOutput(rid, tokens[: request.max_new_tokens], FinishReason.LENGTH)
    if end_id is not None:  # stopped on end_id, which vLLM left out of token_ids
        return EngineOutput(rid, [*tokens, end_id], FinishReason.STOP)
    return EngineOutput(
        rid,
        tokens,
        FinishReason.ERROR,
        f"engine finished after {len(tokens)} of {request.max_new_tokens} tokens "
        "with no end_id to stop on",
    )


def prefix_blocks(metrics: Iterable[tuple[str, float]], block_tokens: int) -> tuple[int, int]:
    """(hit blocks, miss blocks) from vLLM's cumulative prefix-cache counters.

    Assumption: the counters count tokens (queried and hit), as vLLM's
    metric descriptions say; they are turned into blocks of ``block_tokens``.
    """
    queries = hits = 0.0
    for name, value in metrics:
        if name == PREFIX_QUERIES:
            queries = value
        elif name == PREFIX_HITS:
            hits = value
    return int(hits) // block_tokens, int(max(queries - hits, 0.0)) // block_tokens
