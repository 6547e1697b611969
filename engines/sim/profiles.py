"""Hardware and model numbers the simulator's cost model runs on.

GPU specs are keyed by the manifest's ``device`` (the name ``nvidia-smi``
reports) and model specs by its ``model``. Figures are the vendors' public
ones; the cost model applies its own efficiency factors to them
(see :mod:`engines.sim.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Peak figures of one GPU, from its spec sheet."""

    name: str
    memory_bytes: int
    bandwidth_bytes_per_s: float  # HBM bandwidth
    peak_flops: dict[str, float]  # dense tensor-core FLOP/s by manifest dtype


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shape of one decoder-only transformer."""

    name: str
    num_params: float
    num_layers: int
    hidden_size: int
    num_kv_heads: int
    head_dim: int

    def kv_bytes_per_token(self, dtype: str) -> int:
        """KV cache bytes one token occupies: K and V, every layer, every KV head."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * DTYPE_BYTES[dtype]

    def attention_flops_per_pair(self) -> float:
        """FLOPs for one (query token, key token) pair over all layers.

        Q.K^T and the weighted sum over V are one multiply-add each per query
        head dimension, i.e. 2 x 2 x hidden_size per layer.
        """
        return 4.0 * self.num_layers * self.hidden_size


# Bytes per element of weights and KV cache for each manifest dtype. fp8 means
# FP8 weights and FP8 KV cache, as TensorRT-LLM's FP8 checkpoints run.
DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1}

_TB = 1e12
_TFLOPS = 1e12

# Hopper tensor-core rates are the same on H100 SXM and H200; the sheets list
# them "with sparsity", so the dense rates used here are half of those. float32
# uses the plain FP32 (non tensor-core) rate: PyTorch does not use TF32 for
# matmuls unless told to.
_HOPPER_SXM_FLOPS = {
    "fp8": 1979 * _TFLOPS,  # sheet: 3,958 TFLOPS FP8 with sparsity
    "bfloat16": 989 * _TFLOPS,  # sheet: 1,979 TFLOPS BF16 with sparsity
    "float16": 989 * _TFLOPS,  # sheet: 1,979 TFLOPS FP16 with sparsity
    "float32": 67 * _TFLOPS,  # sheet: 67 TFLOPS FP32
}

GPUS: dict[str, GpuSpec] = {
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): 141 GB HBM3e at 4.8 TB/s.
    "NVIDIA H200": GpuSpec(
        name="NVIDIA H200",
        memory_bytes=141 * 10**9,
        bandwidth_bytes_per_s=4.8 * _TB,
        peak_flops=_HOPPER_SXM_FLOPS,
    ),
    # NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): 80 GB HBM3 at 3.35 TB/s.
    "NVIDIA H100 80GB HBM3": GpuSpec(
        name="NVIDIA H100 80GB HBM3",
        memory_bytes=80 * 10**9,
        bandwidth_bytes_per_s=3.35 * _TB,
        peak_flops=_HOPPER_SXM_FLOPS,
    ),
}

MODELS: dict[str, ModelSpec] = {
    # Meta Llama 3.1 8B model card and config.json: 8.03B parameters, 32 layers,
    # hidden size 4096, 32 query heads and 8 KV heads (GQA) of dimension 128.
    "llama-3.1-8b": ModelSpec(
        name="llama-3.1-8b",
        num_params=8.03e9,
        num_layers=32,
        hidden_size=4096,
        num_kv_heads=8,
        head_dim=128,
    ),
}
