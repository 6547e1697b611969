"""vLLM's own ``LLM.generate`` on a file of jobs: what the fabric's results must equal.

Run as a script in a process of its own, so that vLLM runs with its own
defaults (its engine core in child processes, which it spawns: hence the
``__main__`` guard) rather than the adapter's in-process choice:

    python -m tests.vllm.reference MANIFEST JOBS_IN JOBS_OUT

JOBS_IN holds one job a line (``tokens``, ``max_new_tokens``, ``id``). Every
third job gets an ``end_id`` taken from the middle of its own free-running
output, so that stopping is covered; JOBS_OUT has the jobs as submitted
(with those end ids) and, for each, the tokens and finish reason of
``LLM.generate`` with the same settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def llm_for(manifest: dict[str, Any]) -> Any:
    """``LLM`` with the manifest's nine values and vLLM's defaults for everything else."""
    from vllm import LLM

    config = json.loads((Path(manifest["model"]) / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    bytes_per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 4
    assert manifest["dtype"] == "float32" and manifest["device"] == "cpu"
    return LLM(
        model=manifest["model"],
        skip_tokenizer_init=True,
        dtype=manifest["dtype"],
        max_num_seqs=manifest["max_batch_size"],
        max_num_batched_tokens=manifest["max_num_tokens"],
        max_model_len=manifest["max_seq_len"],
        block_size=manifest["kv_block_tokens"],
        num_gpu_blocks_override=manifest["kv_cache_tokens"] // manifest["kv_block_tokens"],
        # the CPU build's KV cache is sized in bytes: the same tokens
        kv_cache_memory_bytes=manifest["kv_cache_tokens"] * bytes_per_token,
    )


def generate(llm: Any, jobs: list[dict[str, Any]]) -> list[tuple[list[int], str]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [
        SamplingParams(
            max_tokens=job["max_new_tokens"],
            temperature=0.0,
            ignore_eos=True,
            stop_token_ids=[job["end_id"]] if job.get("end_id") is not None else None,
            detokenize=False,
        )
        for job in jobs
    ]
    prompts = [TokensPrompt(prompt_token_ids=job["tokens"]) for job in jobs]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [(list(o.outputs[0].token_ids), str(o.outputs[0].finish_reason)) for o in outputs]


def main(manifest_path: str, jobs_in: str, jobs_out: str) -> None:
    manifest = json.loads(Path(manifest_path).read_text())
    jobs = [json.loads(line) for line in Path(jobs_in).read_text().splitlines()]
    llm = llm_for(manifest)
    try:
        free = generate(llm, jobs)
        for i, (job, (tokens, _)) in enumerate(zip(jobs, free, strict=True)):
            if i % 3 == 0 and len(tokens) > 2:
                job["end_id"] = tokens[len(tokens) // 2]
        expected = generate(llm, jobs)
    finally:
        llm.llm_engine.engine_core.shutdown()
    with Path(jobs_out).open("w") as out:
        for job, (tokens, reason) in zip(jobs, expected, strict=True):
            out.write(json.dumps({"job": job, "tokens": tokens, "finish_reason": reason}) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
