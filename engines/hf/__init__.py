"""``hf``: a transformers causal LM with real forward passes and a KV cache.

Greedy decoding of pre-tokenized prompts on CPU or CUDA. Requests that
arrive while a batch runs join it at the next step boundary: their prompts
are prefilled as one left-padded group (per lane, padded to the group's
longest prompt), their KV is left-padded to the running batch's length and
concatenated to it; sequences that finish leave at once. See
:mod:`engines.hf.engine` and docs/engines.md.

The pure parts (:mod:`engines.hf.checks`, :mod:`engines.hf.scheduler`,
:mod:`engines.hf.checkpoint`'s size table) import no torch; only
:mod:`engines.hf.engine` does, which the registry imports when asked for.
"""
