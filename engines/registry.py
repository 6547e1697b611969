"""Engines by name, imported only when asked for.

The table holds ``"module:Class"`` strings, not classes, so ``sim`` and
``null`` run on a machine without TensorRT-LLM or vLLM: an adapter's heavy
dependencies are imported only when that adapter is created.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engines.checkpoint import check_fleet_vocab
from engines.names import ENGINES as _ENGINES
from engines.names import engine_names

if TYPE_CHECKING:
    from engines.contract import Engine
    from engines.manifest import Manifest

# Engines that serve a model with a vocabulary of its own: a fleet with a
# larger vocab_size is refused before the engine is built.
_CHECKPOINT_ENGINES = frozenset({"hf", "trtllm", "vllm"})

# name -> the optional-dependency group of pyproject.toml that brings its libraries.
_EXTRAS: dict[str, str] = {"hf": "hf", "trtllm": "trtllm", "vllm": "vllm"}


class EngineUnavailableError(ImportError):
    """An engine is registered but cannot be imported here (a missing extra)."""


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
        check_fleet_vocab(manifest, fleet_vocab_size)
    engine: Engine = engine_class(manifest.backend)(manifest, **options)
    return engine


def _unavailable(name: str, target: str, exc: BaseException) -> str:
    hint = ""
    if name in _EXTRAS:
        hint = f"; install it with: pip install 'inference-fabric[{_EXTRAS[name]}]'"
    return f"engine {name!r} ({target}) cannot be imported: {exc}{hint}"
