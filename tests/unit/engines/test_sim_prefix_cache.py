"""Prefix cache: chained block hashes and an LRU of blocks."""

from __future__ import annotations

import pytest

from engines.sim.prefix_cache import PrefixCache, block_hashes


def test_only_full_blocks_are_hashed() -> None:
    assert len(block_hashes(list(range(100)), 32)) == 3
    assert block_hashes(list(range(31)), 32) == []
    assert len(block_hashes(list(range(64)), 32)) == 2


def test_a_block_hash_covers_every_token_before_it() -> None:
    base = block_hashes(list(range(96)), 32)
    early_change = block_hashes([999, *range(1, 96)], 32)
    late_change = block_hashes([*range(95), 999], 32)
    assert all(a != b for a, b in zip(base, early_change, strict=True))
    assert late_change[:2] == base[:2]
    assert late_change[2] != base[2]


def test_same_block_at_a_different_position_differs() -> None:
    block = list(range(32))
    hashes = block_hashes(block * 2, 32)
    assert hashes[0] != hashes[1]


def test_match_counts_leading_cached_blocks_only() -> None:
    cache = PrefixCache(capacity_blocks=10)
    hashes = block_hashes(list(range(128)), 32)
    cache.insert(hashes[:2])
    assert cache.match(hashes) == 2
    cache.insert([hashes[3]])  # a later block without its predecessor is useless
    assert cache.match(hashes) == 2
    assert cache.match([]) == 0


def test_evicts_least_recently_used() -> None:
    cache = PrefixCache(capacity_blocks=2)
    cache.insert([1, 2])
    assert cache.match([1]) == 1  # touches 1: 2 is now the oldest
    cache.insert([3])
    assert 2 not in cache
    assert 1 in cache
    assert 3 in cache
    assert len(cache) == 2


def test_zero_capacity_caches_nothing() -> None:
    cache = PrefixCache(capacity_blocks=0)
    cache.insert([1, 2])
    assert len(cache) == 0
    with pytest.raises(ValueError, match="capacity_blocks"):
        PrefixCache(-1)
