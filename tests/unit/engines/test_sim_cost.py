"""The cost model: rooflines per phase, priced from the profile tables."""

from __future__ import annotations

import pytest

from engines.sim.cost import (
    BANDWIDTH_EFFICIENCY,
    FLOPS_EFFICIENCY,
    LAUNCH_OVERHEAD_S,
    CostModel,
    IterationWork,
)
from engines.sim.profiles import GPUS, MODELS

H200 = GPUS["NVIDIA H200"]
H100 = GPUS["NVIDIA H100 80GB HBM3"]
LLAMA = MODELS["llama-3.1-8b"]


def decode(num_seqs: int, context: int) -> IterationWork:
    kv_read = num_seqs * context
    return IterationWork(0, num_seqs, kv_read + num_seqs, kv_read)


def test_profiles_hold_the_spec_sheet_numbers() -> None:
    assert H200.bandwidth_bytes_per_s == 4.8e12
    assert H100.bandwidth_bytes_per_s == 3.35e12
    assert H200.peak_flops["fp8"] == 1979e12
    assert H200.peak_flops["bfloat16"] == 989e12
    assert LLAMA.num_params == 8.03e9
    assert LLAMA.kv_bytes_per_token("fp8") == 2 * 32 * 8 * 128
    assert LLAMA.kv_bytes_per_token("bfloat16") == 2 * 2 * 32 * 8 * 128


def test_single_token_decode_is_bound_by_reading_the_weights() -> None:
    model = CostModel(H200, LLAMA, "fp8")
    weights_s = 8.03e9 / (4.8e12 * BANDWIDTH_EFFICIENCY)
    kv_s = 2 * LLAMA.kv_bytes_per_token("fp8") / (4.8e12 * BANDWIDTH_EFFICIENCY)
    assert model.iteration_s(decode(1, 1)) == pytest.approx(LAUNCH_OVERHEAD_S + weights_s + kv_s)


def test_big_prefill_is_bound_by_flops() -> None:
    model = CostModel(H200, LLAMA, "fp8")
    work = IterationWork(8192, 0, 8192 * 4097, 0)
    gemm_s = 2 * 8.03e9 * 8192 / (1979e12 * FLOPS_EFFICIENCY)
    attention_s = LLAMA.attention_flops_per_pair() * 8192 * 4097 / (1979e12 * FLOPS_EFFICIENCY)
    assert model.iteration_s(work) == pytest.approx(LAUNCH_OVERHEAD_S + gemm_s + attention_s)


def test_more_work_never_costs_less() -> None:
    model = CostModel(H200, LLAMA, "fp8")
    times = [model.iteration_s(decode(n, 1000)) for n in (1, 16, 256, 1024, 2048)]
    assert times == sorted(times)
    assert model.iteration_s(decode(256, 4000)) > model.iteration_s(decode(256, 1000))


def test_long_context_decode_pays_for_kv_reads() -> None:
    # 400 sequences of 3000 tokens read ~79 GB of FP8 KV, ten times the weights;
    # the GEMMs cost the same, so the difference is exactly the extra KV traffic.
    model = CostModel(H200, LLAMA, "fp8")
    short = model.iteration_s(decode(400, 100))
    long = model.iteration_s(decode(400, 3000))
    extra_bytes = 400 * 2900 * LLAMA.kv_bytes_per_token("fp8")
    assert long - short == pytest.approx(extra_bytes / (4.8e12 * BANDWIDTH_EFFICIENCY))
    assert long > 3 * short


def test_dtype_and_gpu_change_the_price() -> None:
    work = decode(64, 2000)
    fp8 = CostModel(H200, LLAMA, "fp8").iteration_s(work)
    bf16 = CostModel(H200, LLAMA, "bfloat16").iteration_s(work)
    on_h100 = CostModel(H100, LLAMA, "fp8").iteration_s(work)
    assert bf16 > 1.8 * fp8 - LAUNCH_OVERHEAD_S
    assert on_h100 > fp8
