"""What the engine asks of a TensorRT-LLM path (LLM API or Executor). No tensorrt_llm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from engines.contract import EngineRequest


@dataclass(frozen=True, slots=True)
class Finished:
    """A request the backend is done with: its tokens, or an error."""

    request_id: int
    tokens: list[int]
    is_cancelled: bool = False
    error: str | None = None
    finish_reason: str | None = None  # the engine's own word, where it gives one
    cached_tokens: int | None = None  # prompt tokens served from the KV cache, where reported


class Backend(Protocol):
    """One TensorRT-LLM path. Called from the engine's thread only."""

    def start(self, request: EngineRequest) -> None: ...

    def wait(self, timeout_s: float) -> list[Finished]:
        """Finished requests; blocks up to ``timeout_s`` when there are none."""
        ...

    def abort(self, request_id: int) -> None: ...

    def iteration_stats(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
