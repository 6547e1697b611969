"""expected_output: the pure function every sim/null result is checked against."""

from __future__ import annotations

import struct
import zlib
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.contract import FinishReason
from engines.sim import outputs as sim_outputs
from engines.sim.outputs import VOCAB_SIZE, expected_output, expected_outputs, prompt_seed

prompts = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=64)


def reference(prompt: list[int], max_new_tokens: int, end_id: int | None) -> list[int]:
    """The documented algorithm, written the plain way."""
    state = zlib.crc32(struct.pack(f"<{len(prompt)}I", *prompt))
    tokens = []
    for _ in range(max_new_tokens):
        state = (state * 1664525 + 1013904223) % 2**32
        token = (state >> 8) % 32000
        tokens.append(token)
        if token == end_id:
            break
    return tokens


def test_known_vector() -> None:
    # Pinned so a change to the algorithm (which checkers elsewhere rely on) fails loudly.
    tokens, reason = expected_output([1, 2, 3], 5, None)
    assert tokens == reference([1, 2, 3], 5, None)
    assert tokens == [29766, 5584, 23252, 21645, 2444]
    assert reason is FinishReason.LENGTH


@given(prompts, st.integers(1, 300))
def test_matches_the_documented_algorithm(prompt: list[int], max_new_tokens: int) -> None:
    tokens, reason = expected_output(prompt, max_new_tokens, None)
    assert tokens == reference(prompt, max_new_tokens, None)
    assert reason is FinishReason.LENGTH
    assert all(0 <= t < VOCAB_SIZE for t in tokens)


@given(prompts, st.integers(1, 300), st.integers(0, 20))
def test_stops_at_end_id_and_includes_it(prompt: list[int], max_new_tokens: int, pick: int) -> None:
    full, _ = expected_output(prompt, max_new_tokens, None)
    end_id = full[pick % len(full)]
    tokens, reason = expected_output(prompt, max_new_tokens, end_id)
    assert reason is FinishReason.STOP
    assert tokens == full[: full.index(end_id) + 1]
    assert tokens[-1] == end_id
    assert tokens == reference(prompt, max_new_tokens, end_id)


def test_end_id_never_produced_runs_to_length() -> None:
    tokens, reason = expected_output([7, 8], 50, VOCAB_SIZE + 1)
    assert len(tokens) == 50
    assert reason is FinishReason.LENGTH


def test_depends_on_the_prompt() -> None:
    assert expected_output([1, 2, 3], 20, None) != expected_output([1, 2, 4], 20, None)
    assert expected_output([1, 2, 3], 20, None) == expected_output((1, 2, 3), 20, None)


def test_a_uint32_array_prompt_has_the_seed_of_the_same_tokens_as_a_list() -> None:

    tokens = [0, 7, 999, 2**32 - 1, 31999]
    assert prompt_seed(array("I", tokens)) == prompt_seed(tokens)
    assert prompt_seed(array("I")) == prompt_seed([])


# A job: a prompt, max_new_tokens (0 and 1 are edge cases of the jump tables) and an
# end_id pick: None, or the index of the token of the full output to stop on.
jobs = st.lists(
    st.tuples(prompts, st.integers(0, 70), st.none() | st.integers(0, 80)), min_size=0, max_size=12
)


@given(jobs)
def test_the_bulk_outputs_are_the_reference_one_by_one(
    batch: list[tuple[list[int], int, int | None]],
) -> None:
    end_ids = []
    for prompt, max_new_tokens, pick in batch:
        full = reference(prompt, max_new_tokens, None)
        end_ids.append(None if pick is None or not full else full[pick % len(full)])
    bulk = expected_outputs([array("I", p) for p, _, _ in batch], [m for _, m, _ in batch], end_ids)
    assert bulk == [expected_output(p, m, e) for (p, m, _), e in zip(batch, end_ids, strict=True)]
    for (prompt, max_new_tokens, _), end_id, (tokens, _) in zip(batch, end_ids, bulk, strict=True):
        assert tokens == reference(prompt, max_new_tokens, end_id)


def test_bulk_outputs_split_into_bounded_steps_give_the_same_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = [[i, i + 1, 7] for i in range(25)]
    whole = expected_outputs(batch, [40] * 25, [None] * 25)
    # 3 rows of 40 tokens per step: 9 steps, the last one short.
    monkeypatch.setattr(sim_outputs, "_MAX_CELLS", 120)
    assert expected_outputs(batch, [40] * 25, [None] * 25) == whole
    # A row longer than the bound still goes, alone.
    assert expected_outputs(batch[:2], [500] * 2, [None] * 2) == [
        expected_output(p, 500, None) for p in batch[:2]
    ]


def test_the_pinned_vector_in_bulk() -> None:
    assert expected_outputs([[1, 2, 3]], [5], [None]) == [
        ([29766, 5584, 23252, 21645, 2444], FinishReason.LENGTH)
    ]


def test_bulk_outputs_refuse_ragged_arguments() -> None:
    with pytest.raises(ValueError, match=r"prompts \(2\), max_new_tokens \(1\)"):
        expected_outputs([[1], [2]], [3], [None, None])
