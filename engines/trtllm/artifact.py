"""What the manifest's ``model`` directory is, and whether the manifest fits it. No tensorrt_llm.

A built engine directory's ``config.json`` is checked field by field
(docs/references.md, "Engine directory config.json": ``pretrained_config`` with
``dtype``, ``quantization {quant_algo, kv_cache_quant_algo}``, ``mapping
{tp_size, pp_size}``; ``build_config`` with ``max_batch_size``,
``max_seq_len``, ``max_num_tokens``, ``plugin_config.tokens_per_block``;
files ``rank{R}.engine``). The engine was built for at most those limits, so
a manifest may ask for the same or less (the runtime config lowers batch and
token limits) but never more. A Hugging Face checkpoint has fewer facts to
check: its ``max_position_embeddings``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from engines import checkpoint
from engines.manifest import Manifest, ManifestError

# manifest dtype -> pretrained_config.dtype of an unquantized engine
_PLAIN_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


class ArtifactKind(StrEnum):
    ENGINE_DIR = "engine_dir"  # trtllm-build output: the Executor path
    HF_CHECKPOINT = "hf_checkpoint"  # the LLM API path (PyTorch backend)


def model_dir(manifest: Manifest) -> Path:
    """The local model directory; nothing is downloaded, so a hub name is refused."""
    return checkpoint.model_dir(
        manifest.model, "a built TensorRT-LLM engine directory or a Hugging Face checkpoint"
    )


def artifact_kind(config: Mapping[str, Any]) -> ArtifactKind:
    """An engine directory's config has ``build_config``; a checkpoint's does not."""
    return ArtifactKind.ENGINE_DIR if "build_config" in config else ArtifactKind.HF_CHECKPOINT


def check_engine_dir(
    manifest: Manifest, config: Mapping[str, Any], engine_files: Sequence[str]
) -> None:
    """Refuse a manifest that the built engine cannot serve, naming the field.

    ``engine_files`` are the file names in the directory (``rank0.engine``...).
    """
    pretrained = _section(config, "pretrained_config")
    build = _section(config, "build_config")
    mapping = pretrained.get("mapping") or {}
    tp, pp = mapping.get("tp_size", 1), mapping.get("pp_size", 1)
    if (tp, pp) != (1, 1):
        raise ManifestError(
            None,
            "model",
            f"engine built for tp_size={tp}, pp_size={pp}; a worker drives one GPU (tp=pp=1)",
        )
    if "rank0.engine" not in engine_files:
        raise ManifestError(None, "model", f"{manifest.model!r} has no rank0.engine")
    _check_dtype(manifest.dtype, pretrained)
    for field, key in (
        ("max_batch_size", "max_batch_size"),
        ("max_num_tokens", "max_num_tokens"),
        ("max_seq_len", "max_seq_len"),
    ):
        built = build.get(key)
        wanted = getattr(manifest, field)
        if not isinstance(built, int):
            raise ManifestError(None, field, f"the engine's build_config has no {key}")
        if wanted > built:
            raise ManifestError(
                None, field, f"{wanted} exceeds the engine's build_config.{key} ({built})"
            )
    tokens_per_block = (build.get("plugin_config") or {}).get("tokens_per_block")
    if isinstance(tokens_per_block, int) and tokens_per_block != manifest.kv_block_tokens:
        built_as = f"the engine's plugin_config.tokens_per_block ({tokens_per_block})"
        message = f"{manifest.kv_block_tokens} differs from {built_as}"
        raise ManifestError(None, "kv_block_tokens", message)


def _check_dtype(dtype: str, pretrained: Mapping[str, Any]) -> None:
    quant = pretrained.get("quantization") or {}
    quant_algo = quant.get("quant_algo")
    built_dtype = pretrained.get("dtype")
    if dtype == "fp8":
        if quant_algo is None or "FP8" not in str(quant_algo).upper():
            raise ManifestError(
                None,
                "dtype",
                f"'fp8' but the engine's quantization.quant_algo is {quant_algo!r}",
            )
        return
    if quant_algo is not None:
        raise ManifestError(
            None, "dtype", f"{dtype!r} but the engine is quantized ({quant_algo!r})"
        )
    if built_dtype != _PLAIN_DTYPES[dtype]:
        raise ManifestError(None, "dtype", f"{dtype!r} but the engine was built as {built_dtype!r}")


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name)
    if not isinstance(section, Mapping):
        raise ManifestError(None, "model", f"the engine's config.json has no {name}")
    return section
