"""The chunked prompt checks refuse exactly what the token-by-token checks
refused, with the same words, and pack the same bytes."""

from __future__ import annotations

import enum
from array import array
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric_worker.wire.entries import pack_tokens
from producers.prompts import PromptError, pack_prompt, pack_prompts

VOCAB = 1000


def reference(tokens: object, vocab_size: int = VOCAB) -> bytes | str:
    """The checks as they were, one token at a time: packed bytes or the reason."""
    if isinstance(tokens, str | bytes) or not isinstance(tokens, Sequence | array):
        return f"tokens must be a list of integers, got {type(tokens).__name__}"
    if len(tokens) == 0:
        return "tokens is empty"
    for i, token in enumerate(tokens):
        if not isinstance(token, int) or isinstance(token, bool):
            return f"tokens[{i}] = {token!r} is not an integer"
        if not 0 <= token < vocab_size:
            return f"tokens[{i}] = {token} is outside [0, {vocab_size})"
    return array("I", tokens).tobytes()


def outcomes(prompts: list[object]) -> list[bytes | str]:
    packed, errors = pack_prompts(prompts, VOCAB)
    assert set(errors) == {i for i, one in enumerate(packed) if one is None}
    return [str(errors[i]) if one is None else pack_tokens(one) for i, one in enumerate(packed)]


token = st.one_of(
    st.integers(0, VOCAB - 1),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)
prompt = st.one_of(
    st.lists(st.integers(0, VOCAB - 1), max_size=40),  # mostly valid, as in real chunks
    st.lists(token, max_size=20),
    st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=40).map(lambda t: array("I", t)),
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5).map(lambda t: array("I", t)),
    st.integers(),
    st.text(max_size=3),
    st.none(),
)


@given(st.lists(prompt, max_size=12))
def test_a_chunk_is_judged_prompt_by_prompt_as_before(prompts: list[object]) -> None:
    assert outcomes(prompts) == [reference(p) for p in prompts]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([5, 999, 1000], "tokens[2] = 1000 is outside [0, 1000)"),
        ([5, -1], "tokens[1] = -1 is outside [0, 1000)"),
        ([2**40], "tokens[0] = 1099511627776 is outside [0, 1000)"),
        ([1, 2.5], "tokens[1] = 2.5 is not an integer"),
        ([1, True], "tokens[1] = True is not an integer"),
        ([1, "7"], "tokens[1] = '7' is not an integer"),
        ([1, np.int64(3)], "tokens[1] = np.int64(3) is not an integer"),
        ([], "tokens is empty"),
        ("abc", "tokens must be a list of integers, got str"),
        (b"ab", "tokens must be a list of integers, got bytes"),
        (7, "tokens must be a list of integers, got int"),
        ({1, 2}, "tokens must be a list of integers, got set"),
        (array("I", [3, 1000]), "tokens[1] = 1000 is outside [0, 1000)"),
    ],
)
def test_each_refusal_names_the_first_bad_token(tokens: object, expected: str) -> None:
    with pytest.raises(PromptError) as info:
        pack_prompt(tokens, VOCAB)
    assert str(info.value) == expected
    assert reference(tokens) == expected


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        # The token-by-token checks let these escape as OverflowError or
        # TypeError from array('I'); now they get a reason like any other.
        (array("i", [4, -2]), "tokens[1] = -2 is outside [0, 1000)"),
        (array("d", [4.0]), "tokens[0] = 4.0 is not an integer"),
        (array("Q", [2**33]), "tokens[0] = 8589934592 is outside [0, 1000)"),
    ],
)
def test_arrays_of_other_types_get_a_reason(tokens: array[int], expected: str) -> None:
    with pytest.raises(PromptError) as info:
        pack_prompt(tokens, VOCAB)
    assert str(info.value) == expected


def test_one_bad_prompt_leaves_its_neighbours_packed() -> None:
    prompts: list[object] = [[1, 2], [3, 1000], array("I", [999]), [4]]
    packed, errors = pack_prompts(prompts, VOCAB)
    assert list(errors) == [1]
    assert [None if p is None else p.tolist() for p in packed] == [[1, 2], None, [999], [4]]


class Colour(enum.IntEnum):
    RED = 3


def test_ids_of_an_int_subclass_are_packed_as_before() -> None:
    tokens = [1, Colour.RED]
    assert pack_tokens(pack_prompt(tokens, VOCAB)) == reference(tokens)


def test_packed_bytes_are_little_endian_uint32_of_the_ids() -> None:
    tokens = [0, 1, 258, 999]
    expected = b"".join(t.to_bytes(4, "little") for t in tokens)
    packed, _ = pack_prompts([tokens, array("I", tokens)], VOCAB)
    assert [pack_tokens(p) for p in packed if p is not None] == [expected, expected]


def test_the_largest_id_of_the_vocabulary_is_the_boundary() -> None:
    big = 2**32 - 1
    assert pack_prompt([big - 1], big).tolist() == [big - 1]
    with pytest.raises(PromptError, match="outside"):
        pack_prompt([big], big)
