"""Engines by name, imported only when asked for.

The table holds ``"module:Class"`` strings, not classes, so ``sim`` and
``null`` run on a machine without TensorRT-LLM or vLLM: an adapter's heavy
dependencies are imported only when that adapter is created.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.contract import Engine
    from engines.manifest import Manifest

# name -> "module:Class". Every class is constructed as ``Class(manifest, **options)``.
_ENGINES: dict[str, str] = {
    "sim": "engines.sim:SimEngine",
    "null": "engines.null:NullEngine",
    "hf": "engines.hf.engine:HfEngine",
    "trtllm": "engines.trtllm.engine:TrtllmEngine",
    "vllm": "engines.vllm.engine:VllmEngine",
}

# Engines that serve a model with a vocabulary of its own: a fleet with a
# larger vocab_size is refused before the engine is built.
_CHECKPOINT_ENGINES = frozenset({"hf", "trtllm", "vllm"})

# name -> the optional-dependency group of pyproject.toml that brings its libraries.
_EXTRAS: dict[str, str] = {"hf": "hf", "trtllm": "trtllm", "vllm": "vllm"}


class EngineUnavailableError(ImportError):
    """An engine is registered but cannot be imported here (a missing extra)."""


def engine_names() -> list[str]:
    """The registered engine names, sorted."""
    return sorted(_ENGINES)


def engine_class(name: str) -> type[Any]:
    """Import and return the class registered as ``name``.

    Raises :class:`KeyError` for an unregistered name and
    :class:`EngineUnavailableError` when its module or its dependencies
    cannot be imported.
    """
    try:
        target = _ENGINES[name]
    except KeyError:
        raise KeyError(
            f"unknown engine {name!r} (registered: {', '.join(engine_names())})"
        ) from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailableError(_unavailable(name, target, exc)) from exc
    try:
        cls: type[Any] = getattr(module, class_name)
    except AttributeError as exc:
        raise EngineUnavailableError(_unavailable(name, target, exc)) from exc
    return cls


def create_engine(
    manifest: Manifest, *, fleet_vocab_size: int | None = None, **options: Any
) -> Engine:
    """Build the engine named by ``manifest.backend``.

    ``options`` go to the engine's constructor unchanged (for ``sim``:
    ``clock``, ``batching``, ``faults``). For the engines that load a model,
    a ``fleet_vocab_size`` larger than the model's is refused first
    (:func:`~engines.checkpoint.check_fleet_vocab`). Engine-specific manifest
    checks (device present, model known) raise
    :class:`~engines.manifest.ManifestError`.
    """
    if manifest.backend in _CHECKPOINT_ENGINES:
        # Imported here: engines.checkpoint needs engines.manifest, which needs
        # this module's engine_names.
        from engines.checkpoint import check_fleet_vocab

        check_fleet_vocab(manifest, fleet_vocab_size)
    engine: Engine = engine_class(manifest.backend)(manifest, **options)
    return engine


def _unavailable(name: str, target: str, exc: BaseException) -> str:
    hint = ""
    if name in _EXTRAS:
        hint = f"; install it with: pip install 'inference-fabric[{_EXTRAS[name]}]'"
    return f"engine {name!r} ({target}) cannot be imported: {exc}{hint}"
