"""The engine contract: what the worker needs from any inference engine.

Every adapter (``sim``, ``hf``, ``trtllm``, ``vllm``) implements :class:`Engine`.
The worker drives an engine from exactly one dedicated thread; engines enforce
that with :class:`ThreadOwner`, so a stray call from an asyncio task fails loudly
instead of racing the GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class FinishReason(StrEnum):
    """Why a request left the engine."""

    LENGTH = "length"  # produced max_new_tokens
    STOP = "stop"  # produced end_id
    CANCELLED = "cancelled"  # cancel() was called for it
    ERROR = "error"  # the engine failed this request (not the whole engine)


class EngineFatalError(RuntimeError):
    """The engine as a whole is unusable; the worker must tear down (exit 3)."""


class WrongThreadError(RuntimeError):
    """An engine method was called from a thread that does not own the engine."""


@dataclass(frozen=True, slots=True)
class Capacity:
    """Static limits of one engine instance, from its manifest (and artifact)."""

    max_batch_size: int  # sequences running at once
    max_num_tokens: int  # tokens computed in one iteration (prefill + decode)
    kv_cache_tokens: int  # KV cache capacity, in tokens
    kv_block_tokens: int  # tokens per KV block (prefix-cache granularity)
    max_seq_len: int  # prompt + output of one sequence
    # Whether a request holds KV for its lane boundary (static batching pads
    # prompts to it) or only for its own prompt (in-flight batching, paged KV).
    # Admission charges the lane boundary where it is True, the prompt where not.
    pads_prompts: bool = True


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One job as the engine sees it.

    ``request_id`` is a handle the worker assigns; it is unique among the
    requests the engine holds. ``pad_to`` is the lane boundary: engines that pad
    (static batching) pad no further than the batch's longest prompt, but may
    use it for shape purity.
    """

    request_id: int
    prompt: Sequence[int]
    max_new_tokens: int
    end_id: int | None = None
    prefix_class: str | None = None
    pad_to: int | None = None


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """A finished request: its generated tokens and why it finished."""

    request_id: int
    tokens: list[int]
    finish_reason: FinishReason
    error: str | None = None  # set when finish_reason is ERROR


@dataclass(slots=True)
class EngineStats:
    """Cumulative counters since the engine started.

    ``computed_tokens`` counts every token slot the engine paid for (real
    prompt and generated tokens plus padding and idle decode slots), so padding
    waste is ``padded_tokens / computed_tokens``.
    """

    busy_s: float = 0.0
    num_steps: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    padded_tokens: int = 0
    computed_tokens: int = 0
    prefix_hit_blocks: int = 0
    prefix_miss_blocks: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    """What every engine adapter provides. All calls from the owning thread only."""

    @property
    def capacity(self) -> Capacity:
        """The engine's static limits."""
        ...

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        """Queue requests; they start at the engine's next iteration boundary."""
        ...

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        """Run the engine and return requests finished since the last poll.

        Blocks at most ``timeout_s`` when nothing finished. Raises
        :class:`EngineFatalError` when the engine itself has failed.
        """
        ...

    def cancel(self, request_ids: Iterable[int]) -> None:
        """Abort requests; each comes back from poll() as CANCELLED (unless it
        had already finished). Unknown ids are ignored."""
        ...

    def stats(self) -> EngineStats:
        """A snapshot of the cumulative counters."""
        ...

    def close(self) -> None:
        """Release the engine's resources. Idempotent."""
        ...


class ThreadOwner:
    """Binds an object to the thread that first uses it.

    Call :meth:`check` at the top of every public engine method.
    """

    __slots__ = ("_owner",)

    def __init__(self) -> None:
        self._owner: int | None = None

    def check(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise WrongThreadError(
                f"engine is owned by thread {self._owner}; called from thread {me}"
            )
