"""A local checkpoint's config.json and the checks every real adapter makes against it.

Nothing is downloaded: ``model`` must be a local directory with a
config.json. Each refusal is a :class:`~engines.manifest.ManifestError`
naming the manifest field, so the worker exits 2 before it claims work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engines.manifest import Manifest, ManifestError


def model_dir(model: str, what: str) -> Path:
    """The directory ``model`` names, which must hold a config.json.

    ``what`` says what the adapter expects there (it ends the message).
    """
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ManifestError(None, "model", f"{model!r} is not a local directory ({what})")
    if not (path / "config.json").is_file():
        raise ManifestError(None, "model", f"{model!r} has no config.json ({what})")
    return path


def read_config(path: Path) -> dict[str, Any]:
    """The directory's config.json as a dict."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            None, "model", f"{str(path)!r}: cannot read config.json: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ManifestError(None, "model", f"{str(path)!r}: config.json is not an object")
    return data


def check_max_positions(manifest: Manifest, config: Mapping[str, Any]) -> None:
    """``max_seq_len`` must fit the checkpoint's ``max_position_embeddings``."""
    max_positions = config.get("max_position_embeddings")
    if isinstance(max_positions, int) and manifest.max_seq_len > max_positions:
        raise ManifestError(
            None,
            "max_seq_len",
            f"{manifest.max_seq_len} exceeds the checkpoint's max_position_embeddings "
            f"({max_positions})",
        )


def checkpoint_vocab_size(manifest: Manifest, config: Mapping[str, Any]) -> int:
    """The checkpoint's ``vocab_size``, which it must state."""
    vocab_size = config.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ManifestError(None, "model", f"{manifest.model!r}: config.json has no vocab_size")
    return vocab_size


def check_fleet_vocab(manifest: Manifest, fleet_vocab_size: int | None) -> None:
    """Refuse a fleet whose token ids can exceed the model's vocabulary.

    The fabric checks every job against the fleet's ``vocab_size``; a larger
    fleet vocabulary than the model's would let ids through that the model
    has no embedding for. The model's is its config.json's ``vocab_size``
    (a TensorRT-LLM engine directory keeps it under ``pretrained_config``).
    A directory without a readable config.json is left to the adapter,
    which refuses it with its own message. ``None``: no fleet to check.
    """
    if fleet_vocab_size is None:
        return
    path = Path(manifest.model).expanduser()
    if not (path / "config.json").is_file():
        return
    config = read_config(path)
    section = config.get("pretrained_config")
    found = section if isinstance(section, Mapping) and "vocab_size" in section else config
    vocab_size = checkpoint_vocab_size(manifest, found)
    if fleet_vocab_size > vocab_size:
        raise ManifestError(
            None,
            "model",
            f"the fleet's vocab_size ({fleet_vocab_size}) is larger than the model's "
            f"vocab_size ({vocab_size}) in {manifest.model!r}: init the fleet with "
            f"--vocab-size {vocab_size} or less, or serve a model with that vocabulary",
        )


def gpu_names() -> list[str]:
    """The visible GPUs' names, by index (torch's view; empty without CUDA)."""
    import torch  # every real adapter's library depends on torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def check_visible_gpu(device: str, names: Sequence[str]) -> None:
    """The manifest names the GPU this worker sees (CUDA_VISIBLE_DEVICES picks one)."""
    if not names:
        raise ManifestError(None, "device", f"{device!r}: no GPU is visible")
    if names[0] != device:
        raise ManifestError(
            None,
            "device",
            f"{device!r} is not the visible GPU ({names[0]!r}); name it as "
            "torch.cuda.get_device_name(0) reports it",
        )


def visible(names: Sequence[str]) -> str:
    """The visible GPUs, for messages."""
    if not names:
        return "no GPU is visible"
    return "visible: " + ", ".join(f"{i}: {name}" for i, name in enumerate(names))
