"""Checking and packing a chunk of prompts at once.

A prompt is a sequence of token ids, each an ``int`` (not a bool, not a float,
not a numpy scalar) in ``[0, vocab_size)``. Checking them one token at a time
in Python costs more than the rest of a submit; so the type check is one
C-level pass per prompt (the set of its element types), the conversion to
uint32 is ``array('I')`` (which refuses negatives and ids past 2**32 itself),
and the range check is one numpy reduction over the whole chunk. Only a prompt
that fails the fast checks is walked token by token, to name its first bad
token with the same words as ever.

Pure code: no server, no I/O.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np

Prompt: TypeAlias = "array[int]"  # array('I') of a checked prompt, in the host's byte order


class PromptError(ValueError):
    """Why one prompt cannot be submitted (the caller names the job)."""


def _pack_slowly(tokens: Sequence[object], vocab_size: int) -> Prompt | PromptError:
    """A prompt the fast checks refused, walked token by token: the reason
    naming its first bad token, or the packed prompt when there is none (ids
    of an ``int`` subclass, such as an IntEnum, are ids)."""
    for i, token in enumerate(tokens):
        if not isinstance(token, int) or isinstance(token, bool):
            return PromptError(f"tokens[{i}] = {token!r} is not an integer")
        if not 0 <= token < vocab_size:
            return PromptError(f"tokens[{i}] = {token} is outside [0, {vocab_size})")
    return array("I", tokens)  # type: ignore[arg-type]  # every id checked above


def _as_uint32(tokens: object) -> array[int] | None:
    """``tokens`` as array('I') if every id is an int that fits, else None.
    Raises PromptError when ``tokens`` is not a sequence of ids at all."""
    if isinstance(tokens, str | bytes) or not isinstance(tokens, Sequence | array):
        raise PromptError(f"tokens must be a list of integers, got {type(tokens).__name__}")
    if len(tokens) == 0:
        raise PromptError("tokens is empty")
    if isinstance(tokens, array):
        if tokens.typecode == "I":
            return tokens
        if tokens.typecode in ("f", "d", "u", "w"):  # not ids: walked to name the first
            return None
    elif not set(map(type, tokens)) <= {int}:
        return None
    try:
        return array("I", tokens)
    except OverflowError:  # negative, or past 2**32
        return None


def pack_prompts(
    prompts: Sequence[object], vocab_size: int
) -> tuple[list[Prompt | None], dict[int, PromptError]]:
    """Check and pack each prompt of a chunk. Returns the packed prompts (None
    where refused) and, by position, why each refused one was refused, its
    first bad token named."""
    packed: list[Prompt | None] = []
    errors: dict[int, PromptError] = {}
    for index, tokens in enumerate(prompts):
        try:
            one = _as_uint32(tokens)
        except PromptError as exc:
            errors[index] = exc
            one = None
        else:
            if one is None:
                one = _checked_slowly(index, tokens, vocab_size, errors)
        packed.append(one)
    kept = [i for i, one in enumerate(packed) if one is not None]
    if not kept:
        return packed, errors
    # One pass over the chunk's ids: each prompt's largest id, by reduceat on
    # the concatenation (every prompt here has at least one id).
    joined = np.frombuffer(b"".join(packed[i] for i in kept), dtype=np.uint32)  # type: ignore[misc]
    lengths = np.fromiter((len(packed[i]) for i in kept), dtype=np.int64, count=len(kept))  # type: ignore[arg-type]
    starts = np.zeros(len(kept), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    too_large = np.flatnonzero(np.maximum.reduceat(joined, starts) >= vocab_size)
    for position in too_large.tolist():
        index = kept[position]
        packed[index] = _checked_slowly(index, prompts[index], vocab_size, errors)
    return packed, errors


def _checked_slowly(
    index: int, tokens: object, vocab_size: int, errors: dict[int, PromptError]
) -> Prompt | None:
    outcome = _pack_slowly(tokens, vocab_size)  # type: ignore[arg-type]
    if isinstance(outcome, PromptError):
        errors[index] = outcome
        return None
    return outcome


def pack_prompt(tokens: object, vocab_size: int) -> Prompt:
    """One prompt, checked and packed; raises PromptError with the reason."""
    packed, errors = pack_prompts([tokens], vocab_size)
    if 0 in errors:
        raise errors[0]
    result = packed[0]
    assert result is not None
    return result
