"""``hf``: a transformers causal LM with real forward passes and a KV cache.

Greedy decoding of pre-tokenized prompts on CPU or CUDA. Requests that
arrive while a batch runs join it at the next step boundary: their prompts
are prefilled as one left-padded group (per lane, padded to the group's
longest prompt), their KV is left-padded to the running batch's length and
concatenated to it; sequences that finish leave at once. See
:mod:`engines.hf.engine` and docs/engines.md.

The pure parts (:mod:`engines.hf.checks`, :mod:`engines.hf.scheduler`,
:mod:`engines.hf.checkpoint`'s size table) import no torch; this package
imports torch only when :class:`HfEngine` is asked for, which is what the
registry does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.hf.engine import HfEngine

__all__ = ["HfEngine"]


def __getattr__(name: str) -> Any:
    # PEP 562: `engines.hf.scheduler` and friends stay importable without torch.
    if name == "HfEngine":
        from engines.hf.engine import HfEngine

        return HfEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
