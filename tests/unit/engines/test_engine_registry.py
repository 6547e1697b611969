"""The engine registry: names, lazy imports, clear errors for missing extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from engines import registry
from engines.manifest import MANIFEST_DIR, Manifest, load_manifest
from engines.names import engine_names
from engines.null import NullEngine
from engines.registry import EngineUnavailableError, create_engine, engine_class
from engines.sim import SimEngine


def test_every_planned_engine_is_registered() -> None:
    assert engine_names() == ["hf", "null", "sim", "trtllm", "vllm"]


def test_create_engine_builds_the_backend_named(small: Manifest) -> None:
    assert isinstance(create_engine(small), SimEngine)
    assert isinstance(create_engine(load_manifest(MANIFEST_DIR / "null.json")), NullEngine)


def test_options_reach_the_constructor(small: Manifest) -> None:
    with pytest.raises(ValueError, match="batching: 'dynamic'"):
        create_engine(small, batching="dynamic")


def test_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown engine 'tgi'"):
        engine_class("tgi")


@pytest.mark.parametrize("name", ["hf", "trtllm", "vllm"])
def test_missing_module_names_the_extra(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # Point the entry at a module that cannot exist, so the test does not depend
    # on whether the real adapter or its libraries are installed here.
    monkeypatch.setitem(registry._ENGINES, name, "engines._no_such_adapter:Engine")
    with pytest.raises(EngineUnavailableError) as info:
        engine_class(name)
    assert f"pip install 'inference-fabric[{name}]'" in str(info.value)
    assert "engines._no_such_adapter" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_missing_class_is_unavailable_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._ENGINES, "sim", "engines.sim:NoSuchEngine")
    with pytest.raises(EngineUnavailableError, match="NoSuchEngine"):
        engine_class("sim")


def test_sim_and_null_import_no_gpu_library() -> None:
    script = textwrap.dedent(
        """
        import sys
        from engines import create_engine, load_manifest
        from engines.manifest import MANIFEST_DIR
        for name in ("sim-small.json", "null.json"):
            create_engine(load_manifest(MANIFEST_DIR / name)).close()
        heavy = {"torch", "tensorrt_llm", "vllm", "transformers"} & set(sys.modules)
        assert not heavy, heavy
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
