"""The hf engine's manifest checks: pure, no torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engines.checkpoint import read_config
from engines.hf.checks import (
    check_against_checkpoint,
    check_model_dir,
    resolve_device,
    torch_dtype_name,
)
from engines.manifest import Manifest, ManifestError, parse_manifest


def manifest(**changes: Any) -> Manifest:
    data = {
        "backend": "hf",
        "model": "m",
        "dtype": "float32",
        "max_batch_size": 8,
        "max_num_tokens": 512,
        "max_seq_len": 1024,
        "kv_cache_tokens": 8192,
        "kv_block_tokens": 32,
        "device": "cpu",
        **changes,
    }
    return parse_manifest(data, "test")


def field_of(call: Any, *args: Any) -> str | None:
    with pytest.raises(ManifestError) as info:
        call(*args)
    return info.value.field


def test_dtypes_map_and_fp8_is_refused_on_dtype() -> None:
    assert [torch_dtype_name(d) for d in ("float32", "float16", "bfloat16")] == [
        "float32",
        "float16",
        "bfloat16",
    ]
    with pytest.raises(ManifestError, match="'fp8' is not supported by the hf engine") as info:
        torch_dtype_name("fp8")
    assert info.value.field == "dtype"


@pytest.mark.parametrize(
    ("device", "names", "expected"),
    [
        ("cpu", [], "cpu"),
        ("cuda", ["NVIDIA H200"], "cuda:0"),
        ("cuda:1", ["NVIDIA H200", "NVIDIA H100 80GB HBM3"], "cuda:1"),
        ("NVIDIA H100 80GB HBM3", ["NVIDIA H200", "NVIDIA H100 80GB HBM3"], "cuda:1"),
    ],
)
def test_devices_resolve(device: str, names: list[str], expected: str) -> None:
    assert resolve_device(device, names) == expected


@pytest.mark.parametrize(
    ("device", "names"),
    [("cuda", []), ("cuda:2", ["NVIDIA H200"]), ("NVIDIA H200", []), ("NVIDIA H200", ["A100"])],
)
def test_absent_devices_are_refused_on_device(device: str, names: list[str]) -> None:
    assert field_of(resolve_device, device, names) == "device"


def test_model_must_be_a_local_checkpoint(tmp_path: Path) -> None:
    assert field_of(check_model_dir, str(tmp_path / "missing")) == "model"
    assert field_of(check_model_dir, "meta-llama/Llama-3.1-8B") == "model"  # no downloads
    assert field_of(check_model_dir, str(tmp_path)) == "model"  # no config.json
    (tmp_path / "config.json").write_text("[1]")
    assert check_model_dir(str(tmp_path)) == tmp_path
    assert field_of(read_config, tmp_path) == "model"


def test_manifest_is_checked_against_the_checkpoint(tmp_path: Path) -> None:
    config = {"max_position_embeddings": 1024, "vocab_size": 100}
    check_against_checkpoint(manifest(), config)
    assert field_of(check_against_checkpoint, manifest(max_seq_len=2048), config) == "max_seq_len"
    sliding = {**config, "sliding_window": 4096}
    assert field_of(check_against_checkpoint, manifest(), sliding) == "model"
    mixed = {**config, "layer_types": ["full_attention", "sliding_attention"]}
    assert field_of(check_against_checkpoint, manifest(), mixed) == "model"
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    no_vocab = read_config(tmp_path)
    assert field_of(check_against_checkpoint, manifest(max_seq_len=64), no_vocab) == "model"
