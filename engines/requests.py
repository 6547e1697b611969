"""Request checks and finish rules that every adapter applies the same way.

A bad request is failed on its own (an ERROR output), never raised: one
malformed job must not take the engine down. The finish rules turn what a
stock engine reports into the contract's shape: STOP ends with ``end_id``,
LENGTH has exactly ``max_new_tokens`` tokens.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from engines.contract import Capacity, EngineOutput, EngineRequest, FinishReason

MAX_TOKEN_ID = (1 << 32) - 1  # prompts are packed as uint32 on the wire


def blocks_for(num_tokens: int, block_tokens: int) -> int:
    """KV blocks needed to hold ``num_tokens`` tokens."""
    return -(-num_tokens // block_tokens)


def request_problem(request: EngineRequest, capacity: Capacity) -> str | None:
    """Why an engine of this capacity cannot run the request, or None when it can."""
    prompt = request.prompt
    if len(prompt) == 0:
        return "empty prompt"
    if request.max_new_tokens < 1:
        return f"max_new_tokens {request.max_new_tokens} must be >= 1"
    total = len(prompt) + request.max_new_tokens
    if total > capacity.max_seq_len:
        return (
            f"prompt ({len(prompt)}) + max_new_tokens ({request.max_new_tokens}) = {total}"
            f" exceeds max_seq_len ({capacity.max_seq_len})"
        )
    num_blocks = blocks_for(total, capacity.kv_block_tokens)
    num_kv_blocks = capacity.kv_cache_tokens // capacity.kv_block_tokens
    if num_blocks > num_kv_blocks:
        return f"needs {num_blocks} KV blocks, the cache has {num_kv_blocks}"
    if not is_uint32_array(prompt) and (min(prompt) < 0 or max(prompt) > MAX_TOKEN_ID):
        return f"prompt token out of range 0..{MAX_TOKEN_ID}"
    return None


def is_uint32_array(tokens: Sequence[int]) -> bool:
    """Whether every token is in 0..MAX_TOKEN_ID by its type alone.

    A worker's prompts are unpacked into ``array('I')`` (and bounded by the
    vocabulary while decoding): scanning them again costs an int object per
    token, which on the null engine was a quarter of the worker's CPU.
    """
    return isinstance(tokens, array) and tokens.typecode in "IL" and tokens.itemsize == 4


def vocab_problem(request: EngineRequest, vocab_size: int) -> str | None:
    """A prompt token the model has no embedding for, or None.

    Engines that index their embedding with the raw ids need this before the
    request reaches them: an out-of-range id is an indexing error inside the
    forward pass, which would fail the whole batch rather than this request.
    """
    if max(request.prompt) >= vocab_size or min(request.prompt) < 0:
        return (
            f"prompt token out of the model's vocabulary 0..{vocab_size - 1} "
            f"(init the fleet with --vocab-size {vocab_size} or less)"
        )
    return None


def duplicate_problem(request_id: int) -> str:
    return f"duplicate request_id {request_id}: the engine already holds it"


def finished_output(
    request: EngineRequest, tokens: list[int], *, is_cancelled: bool = False
) -> EngineOutput:
    """Our output for a request an engine reports done, when it gives no reliable reason.

    Both shapes of a stop are accepted (the end token kept as the last token,
    or left out): a sequence that ended early without cancellation can only
    have stopped on ``end_id``, and gets it back.
    """
    rid = request.request_id
    if is_cancelled:
        return EngineOutput(rid, tokens[: request.max_new_tokens], FinishReason.CANCELLED)
    end_id = request.end_id
    if end_id is not None and end_id in tokens[: request.max_new_tokens]:
        return EngineOutput(rid, tokens[: tokens.index(end_id) + 1], FinishReason.STOP)
    if len(tokens) >= request.max_new_tokens:
        return EngineOutput(rid, tokens[: request.max_new_tokens], FinishReason.LENGTH)
    if end_id is not None:
        return EngineOutput(rid, [*tokens, end_id], FinishReason.STOP)
    return EngineOutput(
        rid,
        tokens,
        FinishReason.ERROR,
        f"engine finished after {len(tokens)} of {request.max_new_tokens} tokens "
        "with no end_id to stop on",
    )


def checked_output(request: EngineRequest, tokens: list[int], reason: FinishReason) -> EngineOutput:
    """Our output for a request an engine reports done with ``reason``, shape checked.

    A STOP must end with the request's ``end_id`` and a LENGTH must hold
    exactly ``max_new_tokens``; anything else is that request's ERROR, named.
    """
    rid = request.request_id
    if reason is FinishReason.STOP:
        if request.end_id is None or not tokens or tokens[-1] != request.end_id:
            return EngineOutput(
                rid, tokens, FinishReason.ERROR, f"stopped without end_id {request.end_id}"
            )
    elif reason is FinishReason.LENGTH and len(tokens) != request.max_new_tokens:
        return EngineOutput(
            rid,
            tokens,
            FinishReason.ERROR,
            f"length stop after {len(tokens)} of {request.max_new_tokens} tokens",
        )
    return EngineOutput(rid, tokens, reason)


def prefix_blocks(
    prompt_len: int, num_cached_tokens: int | None, block_tokens: int
) -> tuple[int, int]:
    """(hit blocks, miss blocks) of one prompt from the tokens its engine served
    from the prefix cache.

    Engines cache whole blocks only: the prompt's full blocks that were not
    served from the cache are misses. ``None`` (no figure) counts as 0 hits.
    """
    num_full = prompt_len // block_tokens
    hits = min((num_cached_tokens or 0) // block_tokens, num_full)
    return hits, num_full - hits
