"""Our requests and stats in TensorRT-LLM's terms, and back. No tensorrt_llm.

Where docs/references.md states the API, it is cited; where it is silent, the
assumption is written next to the code, with what it rests on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engines.contract import EngineOutput, EngineRequest, EngineStats, FinishReason
from engines.requests import finished_output
from engines.trtllm.backend import Finished

NO_END_ID = -1
"""end_id for a job without one. Assumption: the LLM API needs an end_id when
no tokenizer is loaded (``LLM._prepare_sampling_params`` raises otherwise, read
in tensorrt_llm/llmapi/llm.py of a 2025 revision), and -1 never matches a
token id; ``ignore_eos=True`` says the same in words."""


def sampling_kwargs(request: EngineRequest) -> dict[str, Any]:
    """``SamplingParams(**kwargs)`` for greedy decoding of this request.

    docs/references.md: ``SamplingParams(max_tokens=..., end_id=...)``. ``top_k=1``
    is greedy; ``detokenize=False`` and ``ignore_eos`` are SamplingParams
    fields read in tensorrt_llm/sampling_params.py (2025 revision).
    """
    kwargs: dict[str, Any] = {
        "max_tokens": request.max_new_tokens,
        "top_k": 1,
        "detokenize": False,
    }
    if request.end_id is None:
        kwargs.update(end_id=NO_END_ID, pad_id=NO_END_ID, ignore_eos=True)
    else:
        kwargs.update(end_id=request.end_id, pad_id=request.end_id)
    return kwargs


def executor_request_kwargs(request: EngineRequest) -> dict[str, Any]:
    """``bindings.executor.Request(**kwargs)``: the fields docs/references.md lists."""
    end_id = NO_END_ID if request.end_id is None else request.end_id
    return {
        "input_token_ids": list(request.prompt),
        "max_tokens": request.max_new_tokens,
        "end_id": end_id,
        "pad_id": end_id,
        "client_id": request.request_id,
    }


def strip_prompt(tokens: list[int], prompt: Iterable[int]) -> list[int] | None:
    """Output tokens without the echoed prompt; None when they do not start with it.

    The Executor returns the input with the output unless told otherwise
    (``OutputConfig.exclude_input_from_output``, default False in the C++
    runtime: an assumption from the LLM API defaulting it to True in
    sampling_params.py precisely to hide the input).
    """
    prompt = list(prompt)
    if tokens[: len(prompt)] != prompt:
        return None
    return tokens[len(prompt) :]


def trtllm_output(request: EngineRequest, done: Finished) -> EngineOutput:
    """Our output for a request TensorRT-LLM is done with.

    ``finish_reason`` (LLM API, 1.2: stop, length, timeout, cancelled):
    "timeout" is that request's ERROR (it ran past a time limit, its tokens
    are not a result); "cancelled" is CANCELLED. Otherwise, and on the
    Executor path that gives no reason, the tokens' shape decides
    (:func:`engines.requests.finished_output`).
    """
    rid = request.request_id
    if done.error is not None:
        return EngineOutput(rid, [], FinishReason.ERROR, f"trtllm: {done.error}")
    if done.finish_reason == "timeout":
        return EngineOutput(rid, done.tokens, FinishReason.ERROR, "trtllm: request timed out")
    is_cancelled = done.is_cancelled or done.finish_reason == "cancelled"
    return finished_output(request, done.tokens, is_cancelled=is_cancelled)


@dataclass(slots=True)
class IterationTotals:
    """Counters folded from TensorRT-LLM's per-iteration stats."""

    busy_s: float = 0.0
    num_steps: int = 0
    reused_blocks: int = 0
    missed_blocks: int = 0
    num_active_requests: int = 0  # gauge: the latest iteration's
    has_request_blocks: bool = False  # prefix blocks come from the requests' own figures


def parse_iteration_stats(items: Iterable[Any]) -> list[dict[str, Any]]:
    """``LLM.get_stats()`` items as dicts.

    docs/references.md: dicts with camelCase keys. The 2025 source's docstring
    shows JSON strings (``['{"cpuMemUsage": ..., "iter": 0, ...}']``), so
    strings are parsed too.
    """
    parsed: list[dict[str, Any]] = []
    for item in items:
        if item is None:  # what a stats queue yields when it had nothing
            continue
        if isinstance(item, str | bytes):
            item = json.loads(item)
        if isinstance(item, Mapping):
            parsed.append(dict(item))
    return parsed


def fold_iteration_stats(totals: IterationTotals, stats: Iterable[Mapping[str, Any]]) -> None:
    """Add iterations to ``totals``.

    Keys are matched without case or underscores, so the Executor's
    ``iter_latency_ms``/``kv_cache_stats.reused_blocks`` (docs/references.md,
    legacy path) and the LLM API's camelCase (``iterLatencyMS``,
    ``kvCacheStats.reusedBlocks``) both map. The block counters are running
    totals (1.2: the KV cache manager's cumulative ``getNumReusedBlocks`` /
    ``getNumMissedBlocks`` copied into every iteration): the latest wins,
    they are never summed.
    """
    for iteration in stats:
        latency_ms = _find(iteration, "iterlatencyms")
        if isinstance(latency_ms, int | float):
            totals.busy_s += float(latency_ms) / 1000.0
        totals.num_steps += 1
        active = _find(iteration, "numactiverequests")
        if isinstance(active, int):
            totals.num_active_requests = active
        kv = _find(iteration, "kvcachestats")
        if isinstance(kv, Mapping):
            reused, missed = _find(kv, "reusedblocks"), _find(kv, "missedblocks")
            if isinstance(reused, int | float):
                totals.reused_blocks = int(reused)
            if isinstance(missed, int | float):
                totals.missed_blocks = int(missed)


def apply_totals(stats: EngineStats, totals: IterationTotals) -> None:
    """Copy the engine-side counters into our stats (ours: token counts, and the
    prefix blocks when the requests reported their own cached tokens)."""
    stats.busy_s = totals.busy_s
    stats.num_steps = totals.num_steps
    if not totals.has_request_blocks:
        stats.prefix_hit_blocks = totals.reused_blocks
        stats.prefix_miss_blocks = totals.missed_blocks


def _find(mapping: Mapping[str, Any], normalized: str) -> Any:
    for key, value in mapping.items():
        if str(key).replace("_", "").lower() == normalized:
            return value
    return None
