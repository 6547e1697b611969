"""The hf engine's manifest checks: dtype, device, checkpoint. No torch here.

Each refusal is a :class:`~engines.manifest.ManifestError` naming the field,
so the worker exits 2 before it claims any work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engines.checkpoint import check_max_positions, checkpoint_vocab_size, model_dir, visible
from engines.manifest import Manifest, ManifestError

# manifest dtype -> the torch dtype's attribute name
TORCH_DTYPES: dict[str, str] = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
}

_CUDA_INDEX = re.compile(r"cuda(?::(\d+))?")


def torch_dtype_name(dtype: str) -> str:
    """The torch dtype attribute for a manifest dtype; fp8 is refused."""
    if dtype == "fp8":
        raise ManifestError(
            None,
            "dtype",
            "'fp8' is not supported by the hf engine (transformers has no FP8 path for an "
            "arbitrary causal LM on CPU or CUDA here); use bfloat16, float16 or float32, or "
            "the trtllm/vllm engines for FP8",
        )
    try:
        return TORCH_DTYPES[dtype]
    except KeyError:
        raise ManifestError(
            None, "dtype", f"{dtype!r} is not one of {', '.join(TORCH_DTYPES)} for hf"
        ) from None


def resolve_device(device: str, gpu_names: Sequence[str]) -> str:
    """The torch device string for a manifest device.

    ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or a GPU name exactly as
    ``torch.cuda.get_device_name`` reports it (the first visible GPU of that
    name is used). ``gpu_names`` are the visible GPUs' names, by index.
    """
    if device == "cpu":
        return "cpu"
    match = _CUDA_INDEX.fullmatch(device)
    if match is not None:
        index = int(match.group(1) or 0)
        if index >= len(gpu_names):
            raise ManifestError(
                None, "device", f"{device!r}: {visible(gpu_names)}, so there is no GPU {index}"
            )
        return f"cuda:{index}"
    if device in gpu_names:
        return f"cuda:{list(gpu_names).index(device)}"
    raise ManifestError(
        None,
        "device",
        f"{device!r} is not 'cpu', 'cuda[:N]' or the name of a visible GPU ({visible(gpu_names)})",
    )


def check_model_dir(model: str) -> Path:
    """The checkpoint directory, which must exist and hold a config.json.

    A relative path is taken from the working directory. Nothing is ever
    downloaded: a hub name is refused here like any missing path.
    """
    return model_dir(
        model,
        "the hf engine downloads nothing; build one with: fabric engine make-model --out DIR",
    )


def check_against_checkpoint(manifest: Manifest, config: Mapping[str, Any]) -> None:
    """Refuse a manifest the checkpoint cannot serve.

    - ``max_seq_len`` must fit the model's ``max_position_embeddings``.
    - every layer must be full attention: the engine left-pads one shared
      KV cache, which a sliding-window layer would silently cut.
    - the checkpoint states its ``vocab_size``.
    """
    check_max_positions(manifest, config)
    layer_types = config.get("layer_types") or []
    other = sorted({t for t in layer_types if t != "full_attention"})
    if other or config.get("sliding_window") or config.get("use_sliding_window"):
        raise ManifestError(
            None,
            "model",
            f"{manifest.model!r}: the hf engine serves full-attention decoders only "
            f"(found {', '.join(other) or 'a sliding window'})",
        )
    checkpoint_vocab_size(manifest, config)
