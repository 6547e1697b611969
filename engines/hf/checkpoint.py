"""Small seeded Llama-architecture checkpoints, built locally (``fabric engine make-model``).

The weights are random (a fixed torch seed), so the model says nothing
useful, but every forward pass is a real one: the same shapes, kernels and
KV cache as a trained Llama of that size. Nothing is downloaded and no
tokenizer is written: the fabric's jobs are token ids already.

Importing this module does not import torch; :func:`build_checkpoint` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_VOCAB_SIZE = 32_000  # LlamaConfig's own default (Llama 2's tokenizer)


@dataclass(frozen=True, slots=True)
class ModelSize:
    """The shape of a Llama decoder (head_dim = hidden_size / num_heads)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_position_embeddings: int
    # Multiplies the output layer after the seeded init. Random weights give
    # nearly flat logits; a larger scale spreads them (see SIZES["tiny128"]).
    output_scale: float = 1.0

    def num_parameters(self, vocab_size: int) -> int:
        """Weights of LlamaForCausalLM at this size: untied embeddings and lm_head,
        no biases, two RMSNorms per layer and a final one."""
        head_dim = self.hidden_size // self.num_heads
        attention = 2 * self.hidden_size * self.num_heads * head_dim
        attention += 2 * self.hidden_size * self.num_kv_heads * head_dim
        mlp = 3 * self.hidden_size * self.intermediate_size
        layer = attention + mlp + 2 * self.hidden_size
        return self.num_layers * layer + 2 * vocab_size * self.hidden_size + self.hidden_size


SIZES: dict[str, ModelSize] = {
    # tests on a CPU: a forward pass of a few rows takes about a millisecond
    "tiny": ModelSize(64, 192, 2, 4, 2, 4096),
    # vLLM's CPU build: its attention needs head_dim >= 32 (tiny's 16 fails with
    # "Unsupported CPU attention configuration"). Used with --vocab-size 1024.
    # The output layer is scaled so that greedy choices are far apart compared
    # with the float noise of different batchings, in logit units; the tests
    # that compare batched runs token for token also measure the margin.
    "tiny128": ModelSize(128, 384, 2, 4, 2, 4096, output_scale=16.0),
    # CPU benchmarks and GPU contract tests: head_dim 64, which GPU attention
    # kernels support (tiny's 16 is for CPU only)
    "small": ModelSize(512, 1536, 4, 8, 4, 8192),
    # GPU checks: about 300M parameters at the default vocabulary, with room for
    # the trace's longest prompt (14,050) plus output
    "300m": ModelSize(1024, 2816, 20, 16, 8, 16384),
}


def build_checkpoint(out: Path, *, size: str, seed: int, vocab_size: int) -> int:
    """Write a seeded LlamaForCausalLM to ``out`` (save_pretrained); returns its parameter count.

    The same size, seed and vocabulary give the same weights. The config
    names no bos/eos token: stopping is the job's ``end_id``, nothing else.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = SIZES[size]
    if vocab_size < 2:
        raise ValueError(f"vocab_size: {vocab_size} must be >= 2")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if shape.output_scale != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(shape.output_scale)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    return sum(p.numel() for p in model.parameters())
