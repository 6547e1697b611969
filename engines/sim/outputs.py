"""The tokens a simulated engine generates: a pure function of the job.

Because the output depends only on the prompt, ``max_new_tokens`` and
``end_id``, a test (or a benchmark's checker, in any language) can verify
every result the ``sim`` and ``null`` engines return:

1. ``seed`` = CRC-32 (zlib) of the prompt packed as little-endian uint32.
2. ``state`` starts at ``seed`` and steps as a 32-bit LCG:
   ``state = (state * 1664525 + 1013904223) mod 2**32``.
3. Each step emits ``(state >> 8) mod 32000``.

Everything stays in 32-bit arithmetic (products below 2**53), so the same
function is easy to write in C, Go or Redis Lua, whose numbers are doubles.
4. Generation stops after ``max_new_tokens`` tokens (LENGTH) or right after
   emitting ``end_id`` (STOP; ``end_id`` is included in the output).

:func:`expected_output` is the reference, one job at a time in plain Python;
:func:`expected_outputs` gives the same tokens for a batch in a few NumPy
calls (the null engine's outputs, which must cost next to nothing).
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from engines.contract import FinishReason

VOCAB_SIZE = 32000
# The Numerical Recipes LCG: full period modulo 2**32. Its low bits are weak,
# hence the shift before taking the token id.
_LCG_MULTIPLIER = 1664525
_LCG_INCREMENT = 1013904223
_MASK_32 = (1 << 32) - 1
_LITTLE = sys.byteorder == "little"


def prompt_seed(prompt: Sequence[int]) -> int:
    """CRC-32 of the prompt packed as little-endian uint32 (0 <= token < 2**32)."""
    if isinstance(prompt, array) and prompt.itemsize == 4 and _LITTLE and prompt.typecode in "IL":
        return zlib.crc32(prompt)  # already those bytes: no copy through struct
    return zlib.crc32(struct.pack(f"<{len(prompt)}I", *prompt))


def expected_output(
    prompt: Sequence[int], max_new_tokens: int, end_id: int | None
) -> tuple[list[int], FinishReason]:
    """The tokens and finish reason a simulated engine returns for this job."""
    state = prompt_seed(prompt)
    # One comprehension, not a loop with appends: this runs for every token the
    # simulator "generates", millions of times in a calibration run.
    tokens = [
        ((state := (state * _LCG_MULTIPLIER + _LCG_INCREMENT) & _MASK_32) >> 8) % VOCAB_SIZE
        for _ in range(max_new_tokens)
    ]
    return _stopped(tokens, end_id)


# Bounds the NumPy scratch of one bulk step (rows x tokens, 8 bytes each): 8 MiB.
_MAX_CELLS = 1 << 20
_MASK_U64 = np.uint64(_MASK_32)
_SHIFT_U64 = np.uint64(8)
_VOCAB_U64 = np.uint64(VOCAB_SIZE)


@lru_cache(maxsize=64)
def _jumps(num_tokens: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """(a_k, c_k) for k = 1..num_tokens: the LCG's k-th state is (a_k * seed + c_k) mod 2**32.

    So every token of every row comes from one multiply-add on the seeds, with no
    loop over steps. Products stay below 2**64 and uint64 arithmetic wraps modulo
    2**64, a multiple of 2**32: the low 32 bits are exact.
    """
    mults = np.empty(num_tokens, dtype=np.uint64)
    incs = np.empty(num_tokens, dtype=np.uint64)
    mult, inc = 1, 0
    for k in range(num_tokens):
        mult = (mult * _LCG_MULTIPLIER) & _MASK_32
        inc = (inc * _LCG_MULTIPLIER + _LCG_INCREMENT) & _MASK_32
        mults[k], incs[k] = mult, inc
    return mults, incs


def expected_outputs(
    prompts: Sequence[Sequence[int]],
    max_new_tokens: Sequence[int],
    end_ids: Sequence[int | None],
) -> list[tuple[list[int], FinishReason]]:
    """:func:`expected_output` of each job of a batch (the three sequences side by side)."""
    if not len(prompts) == len(max_new_tokens) == len(end_ids):
        raise ValueError(
            f"prompts ({len(prompts)}), max_new_tokens ({len(max_new_tokens)}) and "
            f"end_ids ({len(end_ids)}) must be of one length"
        )
    seeds = [prompt_seed(p) for p in prompts]
    rows_by_length: dict[int, list[int]] = {}
    for i, num_tokens in enumerate(max_new_tokens):
        rows_by_length.setdefault(max(num_tokens, 0), []).append(i)
    outputs: list[tuple[list[int], FinishReason]] = [([], FinishReason.LENGTH)] * len(prompts)
    for num_tokens, rows in rows_by_length.items():
        if num_tokens == 0:
            continue
        mults, incs = _jumps(num_tokens)
        step = max(1, _MAX_CELLS // num_tokens)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            chunk_seeds = np.array([seeds[i] for i in chunk], dtype=np.uint64)[:, None]
            states = (chunk_seeds * mults + incs) & _MASK_U64
            tokens = ((states >> _SHIFT_U64) % _VOCAB_U64).tolist()
            for i, row in zip(chunk, tokens, strict=True):
                outputs[i] = _stopped(row, end_ids[i])
    return outputs


def _stopped(tokens: list[int], end_id: int | None) -> tuple[list[int], FinishReason]:
    if end_id is not None and end_id in tokens:
        return tokens[: tokens.index(end_id) + 1], FinishReason.STOP
    return tokens, FinishReason.LENGTH
