"""Paged KV block pool with a hash-keyed prefix cache and LRU eviction (vLLM V1-like).

The pool holds `num_blocks` blocks, one of which vLLM reserves as the null block, so
`usable_blocks = num_blocks - 1`. Blocks are either private to a running request, or cached
prefix blocks keyed by a content hash (Mooncake's `hash_ids`). A cached entry with no running
request referencing it stays resident but *evictable*: it counts as free for the usage gauge (as
vLLM's `get_usage` does) and is evicted least-recently-used first when an allocation needs room.

Accounting is in counts, not block lists: the simulator never needs block identities, only how
many are held and by whom, which keeps a step O(requests) instead of O(blocks).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class KvPoolError(RuntimeError):
    """An allocation was attempted that the caller should have checked first."""


class KvBlockPool:
    """Block counts of one engine's KV cache, plus its prefix cache."""

    def __init__(self, num_blocks: int, blocks_per_hash: int = 0) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (one is the null block), got {num_blocks}")
        self.num_blocks = num_blocks
        self.usable_blocks = num_blocks - 1
        # engine blocks covered by one prefix hash (e.g. 512-token Mooncake block / 16); 0 = off
        self.blocks_per_hash = blocks_per_hash
        self.private_blocks = 0
        self.used_blocks = 0  # held by running requests: private + referenced cache entries
        self.allocatable_blocks = self.usable_blocks  # free + evictable: what allocations may take
        self._refs: dict[int, int] = {}  # hash -> running requests referencing it (> 0)
        self._evictable: OrderedDict[int, None] = OrderedDict()  # hash -> None, LRU first
        self.evictions = 0
        self.hit_hashes = 0
        self.queried_hashes = 0

    # -- gauges ------------------------------------------------------------------------------
    @property
    def cached_blocks(self) -> int:
        return (len(self._refs) + len(self._evictable)) * self.blocks_per_hash

    def _recount(self) -> None:
        self.used_blocks = self.private_blocks + len(self._refs) * self.blocks_per_hash
        self.allocatable_blocks = self.usable_blocks - self.used_blocks

    @property
    def usage_frac(self) -> float:
        """vLLM's `kv_cache_usage_perc`: 1 - free/usable, evictable cache counted as free."""
        return min(1.0, self.used_blocks / self.usable_blocks)

    # -- private blocks ------------------------------------------------------------------------
    def allocate(self, blocks: int) -> None:
        """Take `blocks` private blocks, evicting LRU cached prefixes if the free list is short."""
        if blocks <= 0:
            return
        if blocks > self.allocatable_blocks:
            raise KvPoolError(f"need {blocks} blocks, {self.allocatable_blocks} allocatable")
        self.private_blocks += blocks
        self.used_blocks += blocks
        self.allocatable_blocks -= blocks
        if self.blocks_per_hash:
            self._evict_until_fits()

    def free(self, blocks: int) -> None:
        self.private_blocks -= blocks
        self.used_blocks -= blocks
        self.allocatable_blocks += blocks
        if self.private_blocks < 0:
            raise KvPoolError("freed more private blocks than were allocated")

    def _evict_until_fits(self) -> None:
        overflow = self.private_blocks + self.cached_blocks - self.usable_blocks
        while overflow > 0 and self._evictable:
            self._evictable.popitem(last=False)
            self.evictions += 1
            overflow -= self.blocks_per_hash

    # -- prefix cache --------------------------------------------------------------------------
    def lookup_prefix(self, hashes: Sequence[int]) -> int:
        """Length of the longest cached prefix of `hashes` (in hashes), without taking it."""
        hit = 0
        for h in hashes:
            if h in self._refs or h in self._evictable:
                hit += 1
            else:
                break
        self.queried_hashes += len(hashes)
        self.hit_hashes += hit
        return hit

    def share(self, hashes: Sequence[int]) -> None:
        """Reference `hashes` as cached entries (creating the ones not cached yet).

        Creating an entry converts blocks the caller computed privately into a shared entry, so
        the caller frees that many private blocks; taking an evictable entry back into use moves
        it from "free" to "used" (the caller must have checked `evictable_count`).
        """
        for h in hashes:
            refs = self._refs.get(h)
            if refs is not None:
                self._refs[h] = refs + 1
            else:
                self._evictable.pop(h, None)
                self._refs[h] = 1
        self._recount()

    def evictable_count(self, hashes: Sequence[int]) -> int:
        """How many of `hashes` are cached but unreferenced (taking them costs free blocks)."""
        return sum(1 for h in hashes if h in self._evictable)

    def release(self, hashes: Sequence[int]) -> None:
        """Drop one reference per hash; unreferenced entries stay cached, evictable (MRU end)."""
        for h in hashes:
            refs = self._refs[h] - 1
            if refs:
                self._refs[h] = refs
            else:
                del self._refs[h]
                self._evictable[h] = None
        self._recount()
        self._evict_until_fits()
