"""The hf engine's torch side: load a checkpoint, prefill, decode, reshape the KV cache.

Written against transformers 5.24 and torch 2.13 (the versions verified
here; see docs/engines.md). What it relies on, all read in that source:

- ``AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)``;
- the model's ``forward(input_ids, attention_mask, position_ids, cache,
  use_cache, logits_to_keep)``: the cache argument is named ``cache`` from
  5.x on and ``past_key_values`` before (both detected by signature); a 2D
  ``attention_mask`` over every cached column plus the new ones, turned into
  the 4D causal-and-padding mask by ``masking_utils.create_causal_mask``;
- ``DynamicCache()`` filled layer by layer with ``update(keys, values,
  layer_idx)``, whose tensors are ``[batch, kv_heads, seq, head_dim]`` and
  read back from ``cache.layers[i].keys/.values`` (``key_cache`` /
  ``value_cache`` lists in releases before the layered cache: assumed from
  the same source's history, not run here).

Greedy decoding is ``argmax`` of the last position's logits, as
``generate(do_sample=False)`` does, so a batch reproduces each sequence run
alone up to floating-point rounding of the padded shapes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache

KvLayers = list[tuple[torch.Tensor, torch.Tensor]]
PAD_TOKEN = 0  # fed at padded positions; the mask hides them, so any valid id works


def load_model(path: Path, dtype_name: str, device: str) -> Any:
    """The checkpoint at ``path`` on ``device`` in ``dtype_name``, in eval mode."""
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    # Cast after loading rather than passing the dtype to from_pretrained: its
    # keyword was renamed (torch_dtype -> dtype) across the supported releases.
    model = model.to(device=torch.device(device), dtype=getattr(torch, dtype_name))
    model.eval()
    return model


class Runner:
    """Forward passes of one model; holds no request state."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.config.vocab_size)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._extra_kw: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def release(self) -> None:
        """Drop the model, so its memory can be freed while this object lives on."""
        self.model = None

    def prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[Any, list[int]]:
        """Run prompts as one batch left-padded to the longest.

        Returns the new cache (right-aligned rows, length = longest prompt)
        and each prompt's first generated token.
        """
        width = max(len(p) for p in prompts)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        ids = torch.full((len(prompts), width), PAD_TOKEN, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask = _right_aligned_mask(lengths, width)
        # position of each real token within its own sequence; 0 at padding
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        tokens = self._forward(ids.to(self.device), mask, positions, cache)
        return cache, tokens

    def decode(
        self, cache: Any, last_tokens: Sequence[int], num_cached: Sequence[int]
    ) -> list[int]:
        """One step for every row: feed its last token at its own position."""
        cache_len = cache_length(cache)
        lengths = torch.tensor(num_cached, device=self.device)
        ids = torch.tensor(last_tokens, dtype=torch.long, device=self.device)[:, None]
        mask = _right_aligned_mask(lengths + 1, cache_len + 1)
        return self._forward(ids, mask, lengths[:, None], cache)

    @torch.inference_mode()
    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> list[int]:
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kw: cache},
            **self._extra_kw,
        )
        # .tolist() waits for the device, so the caller's timer sees the real step time.
        tokens: list[int] = out.logits[:, -1, :].argmax(dim=-1).tolist()
        return tokens


def cache_length(cache: Any) -> int:
    """Columns in the cache (every layer has the same)."""
    layers = kv_layers(cache)
    return 0 if not layers else int(layers[0][0].shape[-2])


def kv_layers(cache: Any) -> KvLayers:
    """Each layer's (keys, values), ``[batch, kv_heads, seq, head_dim]``."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers if layer.keys is not None]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # pre-layered releases


def cache_from(layers: KvLayers) -> Any:
    """A DynamicCache holding exactly these tensors."""
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


@torch.inference_mode()
def select_rows(cache: Any, keep: Sequence[int], length: int) -> Any:
    """Keep rows ``keep`` (in that order) and only the last ``length`` columns."""
    index = torch.tensor(keep, dtype=torch.long)
    layers = kv_layers(cache)
    index = index.to(layers[0][0].device)
    start = int(layers[0][0].shape[-2]) - length
    return cache_from([(k[index, :, start:], v[index, :, start:]) for k, v in layers])


@torch.inference_mode()
def stack(running: Any, joining: Any) -> Any:
    """The running rows then the joining rows, left-padded to a common length."""
    if running is None:
        return joining
    a, b = kv_layers(running), kv_layers(joining)
    length = max(int(a[0][0].shape[-2]), int(b[0][0].shape[-2]))
    return cache_from(
        [
            (
                torch.cat([_pad_left(ka, length), _pad_left(kb, length)]),
                torch.cat([_pad_left(va, length), _pad_left(vb, length)]),
            )
            for (ka, va), (kb, vb) in zip(a, b, strict=True)
        ]
    )


def _pad_left(t: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - int(t.shape[-2])
    if missing == 0:
        return t
    # zeros are finite, so masked columns add exactly nothing to attention
    return torch.nn.functional.pad(t, (0, 0, missing, 0))


def _right_aligned_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """1 where a row's last ``length`` columns are, 0 to their left."""
    columns = torch.arange(width, device=lengths.device)
    return (columns[None, :] >= (width - lengths)[:, None]).long()
