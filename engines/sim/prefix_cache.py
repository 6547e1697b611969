"""The simulator's prefix cache: which prompt blocks already have KV.

Blocks are identified by chained hashes: a block's hash covers its own
tokens and the hash of the block before it, so two prompts share a cached
block only if they agree on every token up to the end of that block (the
scheme vLLM and TensorRT-LLM use for KV block reuse). Only full blocks are
cached; a prompt's partial last block is always computed.

The cache models the compute a hit saves, not the memory sharing: cached
blocks are bounded by the KV capacity in blocks and evicted least recently
used, independently of the blocks running sequences reserve.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_hashes(prompt: Sequence[int], block_tokens: int) -> list[int]:
    """Chained hashes of the prompt's full blocks, first block first."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(prompt) - block_tokens + 1, block_tokens):
        # hash() of a tuple of ints does not depend on PYTHONHASHSEED.
        previous = hash((previous, tuple(prompt[start : start + block_tokens])))
        hashes.append(previous)
    return hashes


class PrefixCache:
    """An LRU set of block hashes, at most ``capacity_blocks`` of them."""

    __slots__ = ("_blocks", "capacity_blocks")

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks: {capacity_blocks} must be >= 0")
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._blocks

    def match(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of a prompt are cached; marks them used.

        Matching stops at the first miss: a later block's KV is useless
        without the blocks before it.
        """
        num_hits = 0
        for block_hash in hashes:
            if block_hash not in self._blocks:
                break
            self._blocks.move_to_end(block_hash)
            num_hits += 1
        return num_hits

    def insert(self, hashes: Sequence[int]) -> None:
        """Record computed blocks as cached, evicting the least recently used."""
        for block_hash in hashes:
            self._blocks[block_hash] = None
            self._blocks.move_to_end(block_hash)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
