"""PyTorch's caching allocator, replayed: what a sequence of allocations leaves reserved.

The allocator keeps every block it handed out cached in its segment after the tensor is
freed; a later request reuses a cached block only if one is large enough, so a sequence of
differently sized temporaries can hold more device memory than was ever live at once. vLLM
releases before 0.6.4 measured the profile run with free-memory deltas and no `empty_cache`
in between (legacy.py), so they charge that reserved memory, not the allocated peak.

The rules (c10/cuda/CUDACachingAllocator.cpp, PyTorch 2.1-2.5; the size constants are the
ones allocator.py uses for the block tails of the weights, plus kSmallBuffer and kLargeBuffer):

- a request is rounded up to 512 bytes; up to 1 MiB it is served from the small pool, above
  from the large pool;
- best fit: the smallest cached free block of the pool that holds the request, the lowest
  address first among equals (`BlockComparatorSize`);
- none fits: a new segment of 2 MiB for a small request, 20 MiB for one under 10 MiB, else
  the request rounded up to 2 MiB;
- the block is split when what remains is at least 512 bytes (small pool) or more than 1 MiB
  (large pool); the remainder stays cached;
- a freed block merges with free neighbours in its segment; segments go back to the device
  only on `empty_cache` (or an out-of-memory retry), never during a replay.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvscale.capacity.allocator import (
    MIN_BLOCK_BYTES,
    MIN_LARGE_ALLOC_BYTES,
    ROUND_LARGE_BYTES,
    SMALL_SIZE_BYTES,
)

SMALL_BUFFER_BYTES = 2 * 1024 * 1024  # kSmallBuffer: the segment small requests share
LARGE_BUFFER_BYTES = 20 * 1024 * 1024  # kLargeBuffer: the segment requests under 10 MiB share


@dataclass(eq=False)  # blocks are found by identity: two can have equal fields
class Block:
    """A block of a segment: a live tensor, or cached free memory."""

    segment: int
    size: int
    free: bool
    small: bool  # the pool of its segment


class CachingAllocator:
    """One stream's caching allocator; `malloc` returns a handle for `free`."""

    def __init__(self) -> None:
        self._segments: list[list[Block]] = []
        self.allocated_bytes = 0
        self.peak_allocated_bytes = 0

    @property
    def reserved_bytes(self) -> int:
        return sum(block.size for segment in self._segments for block in segment)

    def malloc(self, size_bytes: int) -> Block:
        size = max(MIN_BLOCK_BYTES, -(-size_bytes // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES)
        small = size <= SMALL_SIZE_BYTES
        block = self._best_fit(size, small) or self._new_segment(size, small)
        rest = block.size - size
        if (rest >= MIN_BLOCK_BYTES) if small else (rest > SMALL_SIZE_BYTES):
            segment = self._segments[block.segment]
            segment.insert(segment.index(block) + 1, Block(block.segment, rest, True, small))
            block.size = size
        block.free = False
        self.allocated_bytes += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return block

    def free(self, block: Block) -> None:
        block.free = True
        self.allocated_bytes -= block.size
        segment = self._segments[block.segment]
        at = segment.index(block)
        if at + 1 < len(segment) and segment[at + 1].free:
            block.size += segment.pop(at + 1).size
        if at > 0 and segment[at - 1].free:
            segment[at - 1].size += segment.pop(at).size

    def _best_fit(self, size: int, small: bool) -> Block | None:
        best: Block | None = None
        for segment in self._segments:
            for block in segment:
                fits = block.free and block.small == small and block.size >= size
                if fits and (best is None or block.size < best.size):
                    best = block
        return best

    def _new_segment(self, size: int, small: bool) -> Block:
        if small:
            segment_bytes = SMALL_BUFFER_BYTES
        elif size < MIN_LARGE_ALLOC_BYTES:
            segment_bytes = LARGE_BUFFER_BYTES
        else:
            segment_bytes = -(-size // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES
        block = Block(len(self._segments), segment_bytes, True, small)
        self._segments.append([block])
        return block
