"""VllmEngine: vLLM's ``LLMEngine`` stepped by the engine thread.

Each poll calls ``step()`` while vLLM has unfinished requests, until one of
ours finishes or the timeout passes. ``step()`` is synchronous, so there is
no event loop to own. ``busy_s`` is the wall time spent in ``step()`` while
work was held: with vLLM V1's engine core in its own process this is the
time the core had work, not a GPU kernel timer (stated as what it is).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from engines.clock import Clock, WallClock
from engines.contract import (
    Capacity,
    EngineFatalError,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
    ThreadOwner,
)
from engines.manifest import Manifest
from engines.sim.sequence import request_problem
from engines.vllm.mapping import (
    check_manifest,
    checkpoint_config,
    engine_args_kwargs,
    finished_output,
    prefix_blocks,
    request_key,
    sampling_kwargs,
)


class VllmEngine:
    """vLLM on the one GPU this worker sees, prefix caching on."""

    def __init__(self, manifest: Manifest, *, clock: Clock | None = None) -> None:
        config = checkpoint_config(manifest)
        check_manifest(manifest, config, _gpu_names())
        # Assumed import paths: EngineArgs, LLMEngine, SamplingParams and
        # TokensPrompt at the top of the vllm package; LLMEngine.from_engine_args.
        from vllm import EngineArgs, LLMEngine, SamplingParams, TokensPrompt

        self._sampling_params = SamplingParams
        self._tokens_prompt = TokensPrompt
        self._engine = LLMEngine.from_engine_args(EngineArgs(**engine_args_kwargs(manifest)))
        self._owner = ThreadOwner()
        self._capacity = manifest.capacity()
        self._clock: Clock = clock if clock is not None else WallClock()
        self._stats = EngineStats()
        self._requests: dict[str, EngineRequest] = {}
        self._ready: list[EngineOutput] = []
        self._is_closed = False

    @property
    def capacity(self) -> Capacity:
        self._owner.check()
        return self._capacity

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        """``add_request`` with a TokensPrompt; bad requests come back as ERROR."""
        self._owner.check()
        self._check_open()
        for request in requests:
            key = request_key(request.request_id)
            problem = request_problem(request, self._capacity)
            if key in self._requests:
                problem = f"duplicate request_id {request.request_id}: the engine already holds it"
            if problem is not None:
                self._ready.append(
                    EngineOutput(request.request_id, [], FinishReason.ERROR, f"vllm: {problem}")
                )
                continue
            prompt = self._tokens_prompt(prompt_token_ids=list(request.prompt))
            params = self._sampling_params(**sampling_kwargs(request))
            self._engine.add_request(key, prompt, params)
            self._requests[key] = request
            self._stats.prompt_tokens += len(request.prompt)

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
        outputs_ready, self._ready = self._ready, []
        return outputs_ready

    def cancel(self, request_ids: Iterable[int]) -> None:
        """``abort_request``; each comes back CANCELLED (no tokens) from the next poll().

        The request is reported at once rather than when vLLM next mentions it:
        whether step() reports an aborted request at all is not stated in
        docs/references.md, and if it does, that late output is ignored.
        """
        self._owner.check()
        keys = [request_key(i) for i in request_ids if request_key(i) in self._requests]
        if keys:
            self._engine.abort_request(keys)
        for key in keys:
            request = self._requests.pop(key)
            self._ready.append(EngineOutput(request.request_id, [], FinishReason.CANCELLED))

    def stats(self) -> EngineStats:
        """A snapshot; prefix-cache blocks from vLLM's counters when it exposes them."""
        self._owner.check()
        get_metrics = getattr(self._engine, "get_metrics", None)
        if get_metrics is not None:
            # Assumed: LLMEngine.get_metrics() -> objects with .name and .value
            # (counters); docs/references.md names the two counters only.
            metrics = [(m.name, float(m.value)) for m in get_metrics() if hasattr(m, "value")]
            hits, misses = prefix_blocks(metrics, self._capacity.kv_block_tokens)
            self._stats.prefix_hit_blocks, self._stats.prefix_miss_blocks = hits, misses
        return replace(self._stats, extra={"num_running": float(len(self._requests))})

    def close(self) -> None:
        """Abort what is left and drop the engine. Idempotent."""
        self._owner.check()
        if self._is_closed:
            return
        self._is_closed = True
        if self._requests:
            self._engine.abort_request(list(self._requests))
        self._requests.clear()
        self._ready.clear()
        # Assumption: vLLM has no public shutdown on LLMEngine in every release;
        # dropping the last reference lets its engine core shut down.
        del self._engine

    def _finish(self, output: Any) -> None:
        key = str(output.request_id)
        request = self._requests.pop(key, None)
        if request is None:
            return
        completion = output.outputs[0]
        result = finished_output(request, list(completion.token_ids), is_cancelled=False)
        self._stats.generated_tokens += len(result.tokens)
        self._stats.computed_tokens += len(request.prompt) + len(result.tokens)
        self._ready.append(result)

    def _check_open(self) -> None:
        if self._is_closed:
            raise EngineFatalError("vllm: engine is closed")


def _gpu_names() -> list[str]:
    import torch  # vLLM depends on torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
