"""HfEngine on a tiny seeded Llama on the CPU: real forward passes, checked
against the model's own greedy ``generate``, one job at a time."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("torch", reason="the hf engine needs the hf extra (torch)")
pytest.importorskip("transformers", reason="the hf engine needs the hf extra (transformers)")

import torch
from transformers import AutoModelForCausalLM

from engines.contract import EngineOutput, EngineRequest, FinishReason
from engines.hf.checkpoint import SIZES, build_checkpoint
from engines.hf.engine import HfEngine
from engines.manifest import MANIFEST_DIR, Manifest, ManifestError, load_manifest, parse_manifest
from engines.registry import create_engine
from fabric_worker.cli import cli

VOCAB = 512


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    build_checkpoint(out, size="tiny", seed=1, vocab_size=VOCAB)
    return out


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()


def manifest(model_dir: Path, **changes: Any) -> Manifest:
    data = {
        "backend": "hf",
        "model": str(model_dir),
        "dtype": "float32",
        "max_batch_size": 8,
        "max_num_tokens": 1024,
        "max_seq_len": 512,
        "kv_cache_tokens": 16384,
        "kv_block_tokens": 16,
        "device": "cpu",
        **changes,
    }
    return parse_manifest(data, "test")


@pytest.fixture
def engine(model_dir: Path) -> Iterator[HfEngine]:
    built = HfEngine(manifest(model_dir))
    yield built
    built.close()


def generate(model: Any, request: EngineRequest, device: str = "cpu") -> list[int]:
    """The job alone through the model's own greedy generate."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([list(request.prompt)], device=device),
            attention_mask=torch.ones(1, len(request.prompt), dtype=torch.long, device=device),
            max_new_tokens=request.max_new_tokens,
            do_sample=False,
            eos_token_id=request.end_id,
            pad_token_id=0,
        )
    tokens: list[int] = out[0, len(request.prompt) :].tolist()
    return tokens


def run(engine: HfEngine, n: int) -> list[EngineOutput]:
    outputs: list[EngineOutput] = []
    while len(outputs) < n:
        outputs += engine.poll(timeout_s=10.0)
    return outputs


def ragged(n: int, seed: int, lanes: tuple[int, ...] = (16, 64)) -> list[EngineRequest]:
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        length = rng.randint(1, lanes[-1])
        lane = next(lane for lane in lanes if length <= lane)
        prompt = [rng.randrange(VOCAB) for _ in range(length)]
        requests.append(EngineRequest(i, prompt, rng.randint(1, 12), pad_to=lane))
    return requests


def test_batched_results_equal_each_job_alone(engine: HfEngine, reference: Any) -> None:
    requests = ragged(24, seed=3)
    engine.submit(requests[:10])
    outputs = engine.poll(timeout_s=0.0)  # the first group's prefill runs
    engine.submit(requests[10:])  # these join the running batch at a step boundary
    outputs += run(engine, len(requests) - len(outputs))
    got = {o.request_id: o for o in outputs}
    for request in requests:
        assert got[request.request_id].tokens == generate(reference, request), request
        assert got[request.request_id].finish_reason is FinishReason.LENGTH


def test_end_id_stops_like_generate_eos(engine: HfEngine, reference: Any) -> None:
    base = EngineRequest(1, [5, 6, 7, 8], 16)
    full = generate(reference, base)
    end_id = full[5]
    stopping = dataclasses.replace(base, request_id=2, end_id=end_id)
    engine.submit([stopping])
    (output,) = run(engine, 1)
    assert output.finish_reason is FinishReason.STOP
    assert output.tokens == generate(reference, stopping) == full[: full.index(end_id) + 1]


def test_rows_join_at_step_boundaries_and_leave_when_done(engine: HfEngine) -> None:
    engine.submit([EngineRequest(1, [1, 2, 3], 40, pad_to=16)])
    assert engine.poll(timeout_s=0.0) == []  # prefill
    assert engine.stats().extra["num_running"] == 1
    engine.submit([EngineRequest(2, list(range(1, 40)), 3, pad_to=64)])
    engine.poll(timeout_s=0.0)  # the next step prefills the joiner, not a decode
    stats = engine.stats()
    assert stats.extra["num_running"] == 2
    assert stats.num_steps == 2
    # the short prompt's row is padded to the joiner's 39 columns
    assert stats.extra["kv_tokens"] == 2 * 39
    (short,) = run(engine, 1)
    assert short.request_id == 2
    stats = engine.stats()
    assert stats.extra["num_running"] == 1
    # the padding the remaining row no longer needs is gone with the joiner
    assert stats.extra["kv_tokens"] == stats.extra["kv_real_tokens"]


def test_prefill_pads_a_lane_to_its_longest_prompt(engine: HfEngine) -> None:
    engine.submit(
        [
            EngineRequest(1, [1, 2, 3], 1, pad_to=16),
            EngineRequest(2, list(range(1, 11)), 1, pad_to=16),
            EngineRequest(3, list(range(1, 31)), 1, pad_to=64),
        ]
    )
    run(engine, 3)
    stats = engine.stats()
    assert stats.num_steps == 2  # one prefill per lane
    assert stats.prompt_tokens == 43
    assert stats.padded_tokens == 7  # 3 padded to 10; the other lane alone
    assert stats.computed_tokens == 2 * 10 + 30
    assert stats.generated_tokens == 3
    assert stats.busy_s > 0.0


def test_decode_counts_one_slot_per_running_row(engine: HfEngine) -> None:
    engine.submit([EngineRequest(1, [1, 2], 5, pad_to=16), EngineRequest(2, [3], 3, pad_to=16)])
    run(engine, 2)
    stats = engine.stats()
    # prefill 2 x 2 slots; decode steps: 2 rows twice, then 1 row twice
    assert (stats.num_steps, stats.computed_tokens, stats.padded_tokens) == (5, 4 + 4 + 2, 1)
    assert stats.generated_tokens == 8


def test_cancel_returns_the_tokens_so_far(engine: HfEngine, reference: Any) -> None:
    request = EngineRequest(1, [9, 8, 7], 30)
    engine.submit([request, EngineRequest(2, [1], 30)])
    engine.poll(timeout_s=0.0)  # prefill: one token each
    engine.poll(timeout_s=0.0)  # returns after at least one decode step
    engine.cancel([1])
    outputs = {o.request_id: o for o in engine.poll(timeout_s=0.0)}
    cancelled = outputs[1]
    assert cancelled.finish_reason is FinishReason.CANCELLED
    assert 2 <= len(cancelled.tokens) < 30
    assert cancelled.tokens == generate(reference, request)[: len(cancelled.tokens)]
    assert engine.stats().extra["num_running"] == 1


def test_tokens_outside_the_vocabulary_fail_alone(engine: HfEngine) -> None:
    engine.submit([EngineRequest(1, [VOCAB], 2), EngineRequest(2, [1], 2)])
    outputs = {o.request_id: o for o in run(engine, 2)}
    assert outputs[1].finish_reason is FinishReason.ERROR
    assert f"--vocab-size {VOCAB}" in (outputs[1].error or "")
    assert outputs[2].finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": "/nonexistent/checkpoint"}, "model"),
        ({"dtype": "fp8"}, "dtype"),
        ({"max_seq_len": 8192}, "max_seq_len"),
        ({"device": "NVIDIA H200"}, "device"),
        ({"device": "cuda"}, "device"),
    ],
)
def test_manifest_refusals_name_the_field(
    model_dir: Path, changes: dict[str, Any], field: str
) -> None:
    if field == "device" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here; the refusal needs a machine without one")
    with pytest.raises(ManifestError) as info:
        HfEngine(manifest(model_dir, kv_cache_tokens=16384, **changes))
    assert info.value.field == field


def test_make_model_is_seeded_and_sized(tmp_path: Path, model_dir: Path) -> None:
    again = tmp_path / "again"
    other = tmp_path / "other"
    num_params = build_checkpoint(again, size="tiny", seed=1, vocab_size=VOCAB)
    build_checkpoint(other, size="tiny", seed=2, vocab_size=VOCAB)
    assert num_params == SIZES["tiny"].num_parameters(VOCAB)
    weights = (model_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    assert not (again / "tokenizer.json").exists()


def test_shipped_manifest_serves_what_make_model_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hf-tiny-cpu.json names models/hf-tiny, relative to where the worker runs
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["engine", "make-model", "--out", "models/hf-tiny", "--size", "tiny"]
    )
    assert result.exit_code == 0, result.output
    assert "4,194,624 parameters" in result.output
    engine = create_engine(load_manifest(MANIFEST_DIR / "hf-tiny-cpu.json"))
    assert isinstance(engine, HfEngine)
    engine.submit([EngineRequest(1, [3, 1, 4, 1, 5], 6)])
    (output,) = run(engine, 1)
    assert (len(output.tokens), output.finish_reason) == (6, FinishReason.LENGTH)
    engine.close()


def test_size_table_means_what_it_says() -> None:
    assert 290e6 < SIZES["300m"].num_parameters(32_000) < 310e6
    assert SIZES["small"].hidden_size // SIZES["small"].num_heads == 64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_named_by_its_gpu_serves_batches(model_dir: Path) -> None:
    name = torch.cuda.get_device_name(0)
    engine = HfEngine(manifest(model_dir, device=name))
    assert engine.device == "cuda:0"
    requests = ragged(32, seed=5)
    engine.submit(requests)
    outputs = {o.request_id: o for o in run(engine, len(requests))}
    for request in requests:
        assert outputs[request.request_id].finish_reason is FinishReason.LENGTH
        assert len(outputs[request.request_id].tokens) == request.max_new_tokens
    # a lone request has no padding: the same forward passes as generate on the same GPU
    lone = dataclasses.replace(requests[0], request_id=100)
    engine.submit([lone])
    (output,) = run(engine, 1)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
    assert output.tokens == generate(model.to("cuda:0").eval(), lone, device="cuda:0")
    assert engine.stats().busy_s > 0.0
    engine.close()
