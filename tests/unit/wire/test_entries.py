from __future__ import annotations

import contextlib
from array import array

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric_worker.wire.entries import (
    MAX_ENTRY_BYTES,
    MAX_HEADER_BYTES,
    SCHEMA_VERSION,
    EntryError,
    JobEntry,
    ResultEntry,
    decode_job,
    decode_result,
    encode_job,
    encode_result,
    pack_tokens,
    peek_id,
    unpack_tokens,
)
from fabric_worker.wire.keys import Keys, check_namespace

VOCAB = 128_256
MAX_PROMPT = 32_768


def key_slot_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first {...} if non-empty."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


def test_lane_keys_share_one_hash_tag_per_lane() -> None:
    keys = Keys("fleet")
    lane_keys = [
        keys.jobs(256),
        keys.results(256),
        keys.dlq(256),
        keys.backlog(256),
        keys.job(256, "a"),
    ]
    assert {key_slot_tag(k) for k in lane_keys} == {"L256"}
    assert key_slot_tag(keys.jobs(512)) == "L512"
    assert keys.jobs(256) == "fleet:{L256}:jobs"
    assert keys.job(64, "x:1") == "fleet:{L64}:job:x:1"
    assert keys.config == "fleet:config"


@pytest.mark.parametrize("bad", ["", "a b", "x{y}", "a" * 65, "ns:1"])
def test_namespace_refuses_unsafe_names(bad: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        check_namespace(bad)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300))
def test_tokens_round_trip(tokens: list[int]) -> None:
    packed = pack_tokens(tokens)
    assert len(packed) == 4 * len(tokens)
    assert unpack_tokens(packed).tolist() == tokens


def test_tokens_are_little_endian_uint32() -> None:
    assert pack_tokens([1, 0x01020304]) == b"\x01\x00\x00\x00\x04\x03\x02\x01"


job_entries = st.builds(
    JobEntry,
    id=st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
    tokens=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=200).map(
        lambda t: array("I", t)
    ),
    max_new_tokens=st.integers(1, 2**31 - 1),
    prefix_class=st.none() | st.text(min_size=1, max_size=128),
    end_id=st.none() | st.integers(0, VOCAB - 1),
    submitted_at=st.floats(0, 2e9),
)


@given(job_entries)
def test_job_round_trip(entry: JobEntry) -> None:
    fields = {k.encode(): v for k, v in encode_job(entry).items()}
    assert decode_job(fields, vocab_size=VOCAB, max_prompt_tokens=MAX_PROMPT) == entry


results = st.builds(
    ResultEntry,
    id=st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
    tokens=st.lists(st.integers(0, VOCAB - 1), max_size=100),
    finish_reason=st.sampled_from(["length", "stop", "error"]),
    deliveries=st.integers(1, 100),
    worker=st.text(min_size=1, max_size=40),
    submitted_at=st.floats(0, 2e9),
    started_at=st.floats(0, 2e9),
    finished_at=st.floats(0, 2e9),
    error=st.none() | st.text(max_size=50),
)


@given(results)
def test_result_round_trip(result: ResultEntry) -> None:
    assert decode_result(encode_result(result)) == result


def fields_of(header: object, tokens: bytes = pack_tokens([1, 2, 3])) -> dict[bytes, bytes]:
    raw = header if isinstance(header, bytes) else orjson.dumps(header)
    return {b"h": raw, b"t": tokens}


def good_header(**changes: object) -> dict[str, object]:
    header: dict[str, object] = {"v": SCHEMA_VERSION, "id": "j1", "max_new_tokens": 8}
    header.update(changes)
    return header


def decode(fields: dict[bytes, bytes]) -> JobEntry:
    return decode_job(fields, vocab_size=VOCAB, max_prompt_tokens=MAX_PROMPT)


# Each bad entry and (a part of) the reason it is refused with.
BAD_ENTRIES: list[tuple[dict[bytes, bytes], str]] = [
    ({b"t": pack_tokens([1])}, "missing field 'h'"),
    ({b"h": orjson.dumps(good_header())}, "missing field 't'"),
    ({**fields_of(good_header()), b"x": b"1"}, "unexpected fields"),
    (fields_of(b"{not json"), "not valid JSON"),
    (fields_of(b"\xff\xfe"), "not valid JSON"),
    (fields_of([1, 2]), "not a JSON object"),
    (fields_of(good_header(v=99)), "schema version 99"),
    (fields_of(good_header(), b"\x01\x02\x03"), "not a multiple of 4"),
    (fields_of(good_header(), b""), "prompt is empty"),
    (fields_of(good_header(), pack_tokens([VOCAB])), f"token {VOCAB} is outside"),
    (fields_of(good_header(), pack_tokens([0] * (MAX_PROMPT + 1))), "exceeds the largest lane"),
    (fields_of(good_header(id="a b")), "id 'a b'"),
    (fields_of(good_header(id=7)), "id 7"),
    (fields_of(good_header(max_new_tokens=0)), "max_new_tokens 0 is outside"),
    (fields_of(good_header(max_new_tokens="8")), "max_new_tokens must be an integer"),
    (fields_of(good_header(max_new_tokens=True)), "max_new_tokens must be an integer"),
    (fields_of(good_header(end_id=-1)), "end_id -1 is outside"),
    (fields_of(good_header(**{"class": ""})), "class must be"),
    (fields_of(good_header(submitted_at="now")), "submitted_at"),
    (fields_of(b"{" + b" " * MAX_HEADER_BYTES + b"}"), "header of"),
    ({b"h": orjson.dumps(good_header()), b"t": b"\0" * MAX_ENTRY_BYTES}, "entry of"),
]


@pytest.mark.parametrize(("fields", "reason"), BAD_ENTRIES)
def test_decode_refuses_with_reason(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(EntryError, match=None) as info:
        decode(fields)
    assert reason in info.value.reason


def test_decode_refuses_deep_json_without_crashing() -> None:
    deep = b"[" * 2000 + b"]" * 2000
    with pytest.raises(EntryError):
        decode(fields_of(deep))


def test_peek_id_finds_the_id_of_a_bad_entry() -> None:
    assert peek_id(fields_of(good_header(max_new_tokens=-1))) == "j1"
    assert peek_id(fields_of(b"garbage")) is None
    assert peek_id({}) is None


@given(st.dictionaries(st.binary(max_size=4), st.binary(max_size=64), max_size=4))
def test_decode_never_raises_anything_but_entry_error(fields: dict[bytes, bytes]) -> None:
    with contextlib.suppress(EntryError):
        decode(fields)
