"""``vllm``: vLLM's engine driven step by step, token-id prompts (GPU only).

vllm is imported only when :class:`VllmEngine` is created; the package-free
parts (:mod:`engines.vllm.mapping`) are tested on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.vllm.engine import VllmEngine

__all__ = ["VllmEngine"]


def __getattr__(name: str) -> Any:
    if name == "VllmEngine":
        from engines.vllm.engine import VllmEngine

        return VllmEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
