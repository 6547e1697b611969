"""``trtllm``: TensorRT-LLM behind the engine contract (GPU only).

Two paths, chosen by what the manifest's ``model`` directory holds:

- a Hugging Face checkpoint: the LLM API, PyTorch backend
  (:mod:`engines.trtllm.llm_api`), token-id prompts through ``generate_async``;
- a built engine directory (``config.json`` with ``build_config``, and
  ``rank0.engine``): ``tensorrt_llm.bindings.executor.Executor``
  (:mod:`engines.trtllm.executor`), where the installed release still has it.

tensorrt_llm is imported only when :class:`TrtllmEngine` is created. The
package-free parts (:mod:`engines.trtllm.artifact`, :mod:`engines.trtllm.mapping`)
are tested on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.trtllm.engine import TrtllmEngine

__all__ = ["TrtllmEngine"]


def __getattr__(name: str) -> Any:
    if name == "TrtllmEngine":
        from engines.trtllm.engine import TrtllmEngine

        return TrtllmEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
