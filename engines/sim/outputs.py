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
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence

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
    if end_id is not None and end_id in tokens:
        return tokens[: tokens.index(end_id) + 1], FinishReason.STOP
    return tokens, FinishReason.LENGTH
