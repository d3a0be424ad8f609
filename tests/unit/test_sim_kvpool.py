"""Block accounting and the prefix cache's LRU eviction."""

from __future__ import annotations

import pytest

from kvscale.sim.kvpool import KvBlockPool, KvPoolError


def test_null_block_is_not_usable() -> None:
    pool = KvBlockPool(11)
    assert pool.usable_blocks == 10
    pool.allocate(10)
    assert pool.usage_frac == 1.0
    with pytest.raises(KvPoolError):
        pool.allocate(1)


def test_unreferenced_cache_counts_as_free_but_stays_resident() -> None:
    pool = KvBlockPool(101, blocks_per_hash=4)
    pool.share([1, 2, 3])  # a request published three prefix blocks
    assert pool.used_blocks == 12 and pool.usage_frac == pytest.approx(0.12)
    pool.release([1, 2, 3])  # it finished: entries stay cached, evictable
    assert pool.used_blocks == 0 and pool.usage_frac == 0.0
    assert pool.cached_blocks == 12
    assert pool.lookup_prefix([1, 2, 9]) == 2


@pytest.mark.parametrize(
    ("touch_first", "allocate", "survivors"),
    [
        ((), 92, [2, 3]),  # needs 4 blocks back: the least recently released (1) goes
        ((1,), 92, [1, 3]),  # 1 was used again and released last: 2 is now the oldest
        ((), 96, [3]),  # needs 8 back: 1 and 2 go, oldest first
        ((), 88, [1, 2, 3]),  # fits in the free list: nothing evicted
    ],
)
def test_lru_eviction_order(
    touch_first: tuple[int, ...], allocate: int, survivors: list[int]
) -> None:
    pool = KvBlockPool(101, blocks_per_hash=4)
    for h in (1, 2, 3):
        pool.share([h])
        pool.release([h])
    for h in touch_first:
        pool.share([h])
        pool.release([h])
    pool.allocate(allocate)
    assert [h for h in (1, 2, 3) if pool.lookup_prefix([h]) == 1] == survivors
    assert pool.private_blocks + pool.cached_blocks <= pool.usable_blocks


def test_referenced_entries_are_never_evicted() -> None:
    pool = KvBlockPool(21, blocks_per_hash=4)
    pool.share([1, 2])  # 8 blocks held by a running request
    assert pool.allocatable_blocks == 12
    with pytest.raises(KvPoolError):
        pool.allocate(13)
