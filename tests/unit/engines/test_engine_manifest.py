"""The manifest loader: nine required fields, each refusal names its field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines import registry
from engines.contract import Capacity
from engines.manifest import DTYPES, FIELDS, Manifest, ManifestError, load_manifest, parse_manifest

GOOD: dict[str, Any] = {
    "backend": "sim",
    "model": "llama-3.1-8b",
    "dtype": "fp8",
    "max_batch_size": 64,
    "max_num_tokens": 2048,
    "max_seq_len": 8192,
    "kv_cache_tokens": 65536,
    "kv_block_tokens": 32,
    "device": "NVIDIA H200",
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != name}


def refusal(data: Any) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "test.json")
    return info.value


def test_fields_are_the_nine_in_order() -> None:
    assert tuple(GOOD) == FIELDS
    assert [f.name for f in dataclasses.fields(Manifest)] == list(GOOD)


def test_good_json_and_toml_load_the_same(tmp_path: Path) -> None:
    json_path = tmp_path / "m.json"
    json_path.write_text(json.dumps(GOOD))
    toml_path = tmp_path / "m.toml"
    toml_path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in GOOD.items()) + "\n")
    from_json = load_manifest(json_path)
    assert from_json == load_manifest(str(toml_path))
    assert from_json == Manifest(**GOOD)


def test_capacity_carries_the_limits() -> None:
    assert parse_manifest(GOOD, "x").capacity() == Capacity(
        max_batch_size=64,
        max_num_tokens=2048,
        kv_cache_tokens=65536,
        kv_block_tokens=32,
        max_seq_len=8192,
    )


def test_manifest_is_frozen_and_slotted() -> None:
    manifest = parse_manifest(GOOD, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.dtype = "float16"  # type: ignore[misc]
    assert not hasattr(manifest, "__dict__")


def test_missing_file_is_a_file_level_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "absent.json")
    assert info.value.field is None
    assert "absent.json" in str(info.value)
    assert "cannot read" in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [("bad.json", '{"backend": "sim",', "JSON"), ("bad.toml", "backend = = 'sim'", "TOML")],
)
def test_unparseable_file_is_a_file_level_error(
    tmp_path: Path, name: str, text: str, kind: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.field is None
    assert f"cannot parse {kind}" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("backend: sim")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.field is None
    assert "'.yaml'" in str(info.value)


@pytest.mark.parametrize("top", [[GOOD], "sim", 3, None])
def test_top_level_must_be_an_object(top: Any) -> None:
    error = refusal(top)
    assert error.field is None
    assert "top level must be an object" in str(error)


def test_top_level_list_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps([GOOD]))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.field is None
    assert "got list" in str(info.value)


@pytest.mark.parametrize("name", list(GOOD))
def test_missing_field_is_named(name: str) -> None:
    error = refusal(without(name))
    assert error.field == name
    assert str(error) == f"manifest test.json: field '{name}': missing (every field is required)"


def test_unknown_field_is_named() -> None:
    error = refusal(with_(max_tokens=4096))
    assert error.field == "max_tokens"
    assert "unknown field" in str(error)


def test_duplicate_json_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    body = json.dumps(GOOD)[:-1] + ', "dtype": "float16"}'
    path.write_text(body)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.field == "dtype"
    assert "more than once" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("max_batch_size", "64", "str '64'"),
        ("max_num_tokens", 2048.0, "float 2048.0"),
        ("kv_cache_tokens", True, "bool True"),
        ("kv_block_tokens", None, "NoneType None"),
        ("backend", 1, "int 1"),
        ("model", ["llama"], "list ['llama']"),
        ("device", False, "bool False"),
    ],
)
def test_wrong_type_is_named(name: str, value: Any, shown: str) -> None:
    error = refusal(with_(**{name: value}))
    assert error.field == name
    assert shown in str(error)


def test_bool_is_not_an_int_even_when_true_means_one() -> None:
    error = refusal(with_(max_batch_size=True))
    assert error.field == "max_batch_size"
    assert "expected an integer, got bool True" in str(error)


def test_bad_dtype_is_named() -> None:
    error = refusal(with_(dtype="int4"))
    assert error.field == "dtype"
    assert str(error) == (
        "manifest test.json: field 'dtype': 'int4' is not one of float32, float16, bfloat16, fp8"
    )


def test_unregistered_backend_is_named() -> None:
    error = refusal(with_(backend="tensorrt"))
    assert error.field == "backend"
    assert "'tensorrt' is not a registered engine" in str(error)


def test_backend_check_uses_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._ENGINES, "custom", "somewhere:Custom")
    assert parse_manifest(with_(backend="custom"), "x").backend == "custom"


@pytest.mark.parametrize("name", ["model", "device"])
def test_empty_string_is_named(name: str) -> None:
    error = refusal(with_(**{name: "  "}))
    assert error.field == name
    assert "must not be empty" in str(error)


@pytest.mark.parametrize(
    "name",
    ["max_batch_size", "max_num_tokens", "max_seq_len", "kv_cache_tokens", "kv_block_tokens"],
)
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_int_is_named(name: str, value: int) -> None:
    error = refusal(with_(**{name: value}))
    assert error.field == name
    assert str(error) == f"manifest test.json: field '{name}': {value} must be >= 1"


@pytest.mark.parametrize(
    ("changes", "name", "message"),
    [
        (
            {"max_num_tokens": 16384, "kv_cache_tokens": 8192, "max_seq_len": 4096},
            "max_num_tokens",
            "16384 exceeds kv_cache_tokens (8192)",
        ),
        ({"max_seq_len": 70000}, "max_seq_len", "70000 exceeds kv_cache_tokens (65536)"),
        (
            {"kv_block_tokens": 64, "max_seq_len": 32, "max_num_tokens": 32},
            "kv_block_tokens",
            "64 exceeds max_seq_len (32)",
        ),
        ({"max_batch_size": 65537}, "max_batch_size", "65537 exceeds kv_cache_tokens (65536)"),
    ],
)
def test_inconsistent_values_are_named(changes: dict[str, int], name: str, message: str) -> None:
    error = refusal(with_(**changes))
    assert error.field == name
    assert str(error) == f"manifest test.json: field '{name}': {message}"


def test_example_message_from_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(with_(max_num_tokens=16384, kv_cache_tokens=8192, max_seq_len=8192)))
    with pytest.raises(
        ManifestError,
        match=r"^manifest .*sim\.json: field 'max_num_tokens': "
        r"16384 exceeds kv_cache_tokens \(8192\)$",
    ):
        load_manifest(path)


def test_manifest_error_is_a_value_error() -> None:
    assert isinstance(refusal(without("dtype")), ValueError)


def test_first_problem_in_field_order_is_reported() -> None:
    # Problems in device, dtype and max_batch_size: dtype comes first in field order.
    data = with_(device=3, dtype="int4", max_batch_size=0)
    assert refusal(data).field == "dtype"
    # Then: per-field problems, unknown fields, cross-field problems.
    assert refusal({**without("device"), "extra": 1}).field == "device"
    assert refusal({**with_(max_seq_len=99999), "extra": 1}).field == "extra"
    assert refusal(with_(max_batch_size=99999, max_seq_len=99999)).field == "max_batch_size"
    assert refusal({**GOOD, "zeta": 1, "alpha": 2}).field == "alpha"


@given(st.sets(st.sampled_from(list(GOOD)), min_size=1))
def test_the_first_missing_field_is_named(removed: set[str]) -> None:
    data = {k: v for k, v in GOOD.items() if k not in removed}
    first = next(name for name in GOOD if name in removed)
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, "prop")
    assert info.value.field == first


@given(st.text(min_size=1, max_size=200).filter(lambda text: text not in DTYPES))
def test_messages_are_one_line(value: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(with_(dtype=value), "multi\nline")
    assert "\n" not in str(info.value)
