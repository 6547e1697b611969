"""The registered engine names and where each lives: a leaf, so that the
manifest loader can check a backend's name without importing the registry."""

from __future__ import annotations

# name -> "module:Class". Every class is constructed as ``Class(manifest, **options)``.
ENGINES: dict[str, str] = {
    "sim": "engines.sim:SimEngine",
    "null": "engines.null:NullEngine",
    "hf": "engines.hf.engine:HfEngine",
    "trtllm": "engines.trtllm.engine:TrtllmEngine",
    "vllm": "engines.vllm.engine:VllmEngine",
}


def engine_names() -> list[str]:
    """The registered engine names, sorted."""
    return sorted(ENGINES)
