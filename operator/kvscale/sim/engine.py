"""One simulated vLLM-like engine: continuous batching over a paged KV pool.

Each scheduler step follows vLLM V1: running requests first (a decode token each, or the next
chunk of a prefill), within `max_num_batched_tokens`; a running request that cannot get a block
preempts the *last* running request by recompute (its blocks are freed and it goes back to the
front of the queue); only when nobody was preempted are waiting requests admitted, FCFS, while
`max_num_seqs`, the token budget and the blocks allow. Step time comes from the planner's
roofline (`step_time_s`), never from a separate model.

Speed: while the batch is pure decode and nothing can join, successive steps differ only in
context length, so they are applied as one stretch: it ends exactly at the first step that
finishes a request, needs a block that is not there, or crosses the caller's next event time.
Step times inside a stretch are interpolated linearly in context tokens (the roofline is
linear in KV bytes read); the stretch is split when the roofline's midpoint disagrees by > 0.5 %.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kvscale.sim.kvpool import KvBlockPool
from kvscale.sim.stats import (
    FINE_BOUNDS_S,
    ITL_BUCKETS_S,
    REQUEST_LATENCY_BUCKETS_S,
    TTFT_BUCKETS_S,
    Histogram,
)

StepTimeFn = Callable[[int, int, int], float]  # (prefill_tokens, decode_seqs, context_tokens) -> s
BlocksFn = Callable[[int], int]  # context tokens -> blocks one request holds (all KV groups)
IntArray = npt.NDArray[np.int64]

_LINEAR_TOLERANCE_FRAC = 0.005


@dataclass(frozen=True)
class EngineConfig:
    """What one engine instance was started with, plus its physics (from the capacity plan)."""

    num_blocks: int
    block_size_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len_tokens: int
    step_time_s: StepTimeFn
    blocks_for_tokens: BlocksFn
    enable_prefix_caching: bool = True
    prefix_hash_tokens: int = 512  # tokens covered by one trace hash id (Mooncake: 512)


class SimRequest:
    """One request's life in the engine (mutable; __slots__ for speed)."""

    __slots__ = (
        "arrival_s",
        "blocks",
        "computed",
        "finish_s",
        "first_scheduled_s",
        "first_token_s",
        "generated",
        "hashes",
        "last_token_s",
        "output_tokens",
        "preemptions",
        "prompt_tokens",
        "rid",
        "shared",
        "status",
        "unreported_preemptions",
    )

    def __init__(
        self,
        rid: int,
        arrival_s: float,
        prompt_tokens: int,
        output_tokens: int,
        hashes: tuple[int, ...] = (),
    ) -> None:
        self.rid = rid
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = max(1, output_tokens)
        self.hashes = hashes
        self.generated = 0
        self.computed = 0  # tokens whose KV is in the cache
        self.blocks = 0  # blocks held in total (private + shared)
        self.shared = 0  # leading hashes referenced in the prefix cache
        self.preemptions = 0
        self.unreported_preemptions = 0  # not yet in vLLM's counter: it waits for the next token
        self.first_scheduled_s: float | None = None
        self.first_token_s: float | None = None
        self.last_token_s = 0.0
        self.finish_s: float | None = None
        self.status = "new"  # new | waiting | running | finished | rejected | aborted

    @property
    def known_tokens(self) -> int:
        return self.prompt_tokens + self.generated

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean inter-token latency of this request (0 for a single-token answer)."""
        if self.first_token_s is None or self.generated < 2:
            return 0.0
        return (self.last_token_s - self.first_token_s) / (self.generated - 1)


FinishFn = Callable[[SimRequest], None]


class EngineSim:
    """A simulated engine with its own clock; the caller advances it with `run_until`."""

    def __init__(self, config: EngineConfig, on_finish: FinishFn | None = None) -> None:
        self.config = config
        self.table: IntArray = _build_block_table(config)
        self._table: list[int] = self.table.tolist()  # scalar lookups: a list is ~5x faster
        bph = _blocks_per_hash(config, self.table)
        self.pool = KvBlockPool(config.num_blocks, bph)
        self.on_finish = on_finish
        self.clock_s = 0.0
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.preemptions_total = 0
        # What vLLM's `num_preemptions_total` shows: a preemption is counted when the preempted
        # request emits its next token (the event travels with that output; seen on the real
        # 0.32.0 engine and in vllm/v1/metrics/stats.py), not when it is preempted.
        self.preemptions_reported_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.success_total = 0
        self.steps_total = 0
        self.scheduled_tokens_total = 0  # prefill + decode tokens over all steps (vLLM's step log)
        self.last_step_end_s = 0.0  # when the engine last did work (the clock jumps when idle)
        self.ttft = Histogram(TTFT_BUCKETS_S)
        self.itl = Histogram(ITL_BUCKETS_S)
        self.e2e = Histogram(REQUEST_LATENCY_BUCKETS_S)
        self.queue_time = Histogram(REQUEST_LATENCY_BUCKETS_S)
        self.itl_fine = Histogram(FINE_BOUNDS_S)

    # -- public --------------------------------------------------------------------------------
    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def add_request(self, req: SimRequest) -> bool:
        """Queue a request; False (rejected, like vLLM's HTTP 400) when the prompt is too long."""
        max_len = self.config.max_model_len_tokens
        if (
            req.prompt_tokens >= max_len
            or self._table[req.prompt_tokens + 1] > self.pool.usable_blocks
        ):
            req.status = "rejected"
            return False
        req.output_tokens = min(req.output_tokens, max_len - req.prompt_tokens)
        req.status = "waiting"
        self.waiting.append(req)
        return True

    def run_until(self, t_target_s: float) -> None:
        """Run steps while one would start before `t_target_s`; idle time jumps to it."""
        while self.clock_s < t_target_s:
            if not (self.running or self.waiting):
                self.clock_s = t_target_s
                return
            self._step(t_target_s)

    def abort_all(self) -> list[SimRequest]:
        """Drop every request (pod killed after its grace period); they never finish."""
        dropped = list(self.running) + list(self.waiting)
        for req in self.running:
            self._release(req)
        self.running.clear()
        self.waiting.clear()
        for req in dropped:
            req.status = "aborted"
        return dropped

    # -- one scheduler step --------------------------------------------------------------------
    def _step(self, t_target_s: float) -> None:
        budget = self.config.max_num_batched_tokens
        sched: list[tuple[SimRequest, int]] = []
        table = self._table
        pool = self.pool
        running = self.running
        avail = pool.allocatable_blocks
        taken = 0  # blocks granted in this pass, handed to the pool in one call
        all_decode = True
        preempted = False
        i = 0
        while i < len(running):
            req = running[i]
            n = req.prompt_tokens + req.generated - req.computed
            n = min(n, budget)
            if n <= 0:
                i += 1
                continue
            need = table[req.computed + n] - req.blocks
            if need > avail - taken:
                pool.allocate(taken)
                taken = 0
                if not self._make_room(req, need):
                    preempted = True
                    break
                preempted = True
                avail = pool.allocatable_blocks
            taken += need
            req.blocks += need
            if n != 1 or not req.generated:
                all_decode = False
            sched.append((req, n))
            budget -= n
            i += 1
        pool.allocate(taken)
        admitted = False if preempted else self._admit(sched, budget)
        if not sched:
            if not preempted:
                self._reject_unservable()
            return
        if all_decode and not admitted and not preempted:
            self._run_decode_stretch(sched, t_target_s)
        else:
            self._run_mixed_step(sched)

    def _make_room(self, req: SimRequest, need: int) -> bool:
        """Preempt from the back of the batch until `need` blocks fit; False if `req` went."""
        running = self.running
        while need > self.pool.allocatable_blocks:
            victim = running.pop()
            self._preempt(victim)
            if victim is req:
                return False
        return True

    def _admit(self, sched: list[tuple[SimRequest, int]], budget: int) -> bool:
        cfg = self.config
        admitted = False
        while self.waiting and len(self.running) < cfg.max_num_seqs and budget > 0:
            req = self.waiting[0]
            hits = self._lookup_prefix(req)
            hit_tokens = hits * cfg.prefix_hash_tokens
            n = min(req.known_tokens - hit_tokens, budget)
            bph = self.pool.blocks_per_hash
            blocks = self._table[hit_tokens + n]
            hit_hashes = req.hashes[:hits]
            cost = blocks - hits * bph + self.pool.evictable_count(hit_hashes) * bph
            if cost > self.pool.allocatable_blocks:
                break
            self.waiting.popleft()
            self.pool.share(hit_hashes)
            self.pool.allocate(blocks - hits * bph)
            req.shared = hits
            req.computed = hit_tokens
            req.blocks = blocks
            req.status = "running"
            if req.first_scheduled_s is None:
                req.first_scheduled_s = self.clock_s
                self.queue_time.observe(self.clock_s - req.arrival_s)
            self.running.append(req)
            sched.append((req, n))
            budget -= n
            admitted = True
        return admitted

    def _lookup_prefix(self, req: SimRequest) -> int:
        """Cached leading hashes usable by `req` (never its last token: it is recomputed)."""
        if not (req.hashes and self.pool.blocks_per_hash):
            return 0
        usable = min(len(req.hashes), (req.known_tokens - 1) // self.config.prefix_hash_tokens)
        return self.pool.lookup_prefix(req.hashes[:usable]) if usable > 0 else 0

    def _reject_unservable(self) -> None:
        """Nothing could be scheduled with an empty batch: the head request can never fit."""
        req = self.waiting.popleft()
        req.status = "rejected"
        if self.on_finish is not None:
            self.on_finish(req)

    def _run_mixed_step(self, sched: list[tuple[SimRequest, int]]) -> None:
        prefill_tokens = 0
        decode_seqs = 0
        context_tokens = 0
        for req, n in sched:
            if req.generated and req.known_tokens - req.computed == 1:
                decode_seqs += 1
            else:
                prefill_tokens += n
            context_tokens += req.computed + n
        end_s = self.clock_s + self.config.step_time_s(prefill_tokens, decode_seqs, context_tokens)
        self.steps_total += 1
        self.scheduled_tokens_total += prefill_tokens + decode_seqs  # a decode input is 1 token
        for req, n in sched:
            req.computed += n
            if req.shared < len(req.hashes) and self.pool.blocks_per_hash:
                self._publish_prefix(req)
            if req.computed == req.known_tokens:
                self._emit_token(req, end_s)
        self.clock_s = end_s
        self.last_step_end_s = end_s

    def _publish_prefix(self, req: SimRequest) -> None:
        """Full hash blocks this request just computed become shared cache entries."""
        full = min(
            len(req.hashes), min(req.computed, req.prompt_tokens) // self.config.prefix_hash_tokens
        )
        if full > req.shared:
            new = req.hashes[req.shared : full]
            self.pool.share(new)
            self.pool.free(len(new) * self.pool.blocks_per_hash)
            req.shared = full

    def _emit_token(self, req: SimRequest, at_s: float) -> None:
        self.preemptions_reported_total += req.unreported_preemptions
        req.unreported_preemptions = 0
        if req.generated == 0:
            req.first_token_s = at_s
            self.ttft.observe(at_s - req.arrival_s)
            self.prompt_tokens_total += req.prompt_tokens
        else:
            gap = at_s - req.last_token_s
            self.itl.observe(gap)
            self.itl_fine.observe(gap)
        req.generated += 1
        req.last_token_s = at_s
        self.generation_tokens_total += 1
        if req.generated >= req.output_tokens:
            self.running.remove(req)
            self._finish(req, at_s)

    def _finish(self, req: SimRequest, at_s: float) -> None:
        self._release(req)
        req.finish_s = at_s
        req.status = "finished"
        self.success_total += 1
        self.e2e.observe(at_s - req.arrival_s)
        if self.on_finish is not None:
            self.on_finish(req)

    def _release(self, req: SimRequest) -> None:
        bph = self.pool.blocks_per_hash
        self.pool.free(req.blocks - req.shared * bph)
        if req.shared:
            self.pool.release(req.hashes[: req.shared])
        req.blocks = 0
        req.shared = 0

    def _preempt(self, req: SimRequest) -> None:
        self._release(req)
        req.computed = 0
        req.preemptions += 1
        req.unreported_preemptions += 1
        req.status = "waiting"
        self.preemptions_total += 1
        self.waiting.appendleft(req)

    # -- fused decode stretch ------------------------------------------------------------------
    def _run_decode_stretch(self, sched: list[tuple[SimRequest, int]], t_target_s: float) -> None:
        reqs = [req for req, _ in sched]
        batch = len(reqs)
        ctx = np.fromiter((r.computed for r in reqs), dtype=np.int64, count=batch)
        k_max = min(r.output_tokens - r.generated for r in reqs)
        base_ctx = int(ctx.sum())
        t1, slope, k_max = self._fit_step_times(batch, base_ctx, k_max)
        k = _steps_to_reach(t_target_s - self.clock_s, t1, slope, k_max)
        k = self._limit_by_blocks(ctx, k)
        times = t1 + slope * np.arange(k, dtype=np.float64)
        span_s = float(times.sum())
        extra_blocks = self.table[ctx + k] - self.table[ctx + 1]
        self.pool.allocate(int(extra_blocks.sum()))
        start_s = self.clock_s
        end_s = start_s + span_s
        first_gaps = np.fromiter((start_s + t1 - r.last_token_s for r in reqs), np.float64, batch)
        self.itl.observe_many(first_gaps)
        self.itl_fine.observe_many(first_gaps)
        if k > 1:
            self.itl.observe_many(times[1:], weight=batch)
            self.itl_fine.observe_many(times[1:], weight=batch)
        self.generation_tokens_total += batch * k
        self.steps_total += k
        self.scheduled_tokens_total += batch * k
        done: list[SimRequest] = []
        for req, extra in zip(reqs, extra_blocks.tolist(), strict=True):
            req.computed += k
            req.generated += k
            req.blocks += extra
            req.last_token_s = end_s
            if req.generated >= req.output_tokens:
                done.append(req)
        self.clock_s = end_s
        self.last_step_end_s = end_s
        if done:
            finished = set(map(id, done))
            self.running = [r for r in self.running if id(r) not in finished]
            for req in done:
                self._finish(req, end_s)

    def _fit_step_times(self, batch: int, base_ctx: int, k_max: int) -> tuple[float, float, int]:
        """First step time, per-step increment, and how many steps that line is valid for.

        The line through the first and last step is checked at its midpoint; where the
        roofline bends (e.g. it turns compute-bound) the stretch is halved until it is straight.
        """
        step = self.config.step_time_s
        t1 = step(0, batch, base_ctx + batch)
        while k_max > 1:
            t_last = step(0, batch, base_ctx + batch * k_max)
            slope = (t_last - t1) / (k_max - 1)
            mid = (k_max + 1) // 2
            if k_max <= 2:
                return t1, slope, k_max
            t_mid = step(0, batch, base_ctx + batch * mid)
            if abs(t1 + slope * (mid - 1) - t_mid) <= _LINEAR_TOLERANCE_FRAC * t_mid:
                return t1, slope, k_max
            k_max = mid
        return t1, 0.0, 1

    def _limit_by_blocks(self, ctx: IntArray, k: int) -> int:
        """Largest k' <= k whose extra blocks fit (step 1's blocks are already allocated)."""
        avail = self.pool.allocatable_blocks
        table = self.table
        base = table[ctx + 1]
        if int((table[ctx + k] - base).sum()) <= avail:
            return k
        lo, hi = 1, k  # lo fits, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if int((table[ctx + mid] - base).sum()) <= avail:
                lo = mid
            else:
                hi = mid
        return lo


def _steps_to_reach(dt_s: float, t1: float, slope: float, k_max: int) -> int:
    """Smallest k in [1, k_max] with sum_{j<k}(t1 + slope*j) >= dt_s (k_max if never)."""
    if dt_s <= t1:
        return 1
    if not math.isfinite(dt_s):
        return k_max
    if abs(slope) < 1e-15:
        k = math.ceil(dt_s / t1)
    else:
        a = slope / 2.0
        b = t1 - slope / 2.0
        disc = b * b + 4.0 * a * dt_s
        k = math.ceil((-b + math.sqrt(max(disc, 0.0))) / (2.0 * a)) if disc >= 0 else k_max
    k = max(1, min(k, k_max))
    while k > 1 and (k - 1) * t1 + slope * (k - 1) * (k - 2) / 2.0 >= dt_s:
        k -= 1
    return k


@functools.lru_cache(maxsize=8)
def _build_block_table(config: EngineConfig) -> IntArray:
    """blocks_for_tokens for every context length up to max_model_len (+1 for lookahead)."""
    size = config.max_model_len_tokens + 2
    return np.fromiter((config.blocks_for_tokens(t) for t in range(size)), np.int64, size)


def _blocks_per_hash(config: EngineConfig, table: IntArray) -> int:
    """Engine blocks one trace hash covers; 0 disables prefix caching.

    Caching is modelled only where blocks grow in proportion to tokens (full attention): vLLM
    also turns it off or limits it for sliding-window/hybrid layouts.
    """
    h = config.prefix_hash_tokens
    if not config.enable_prefix_caching or h % config.block_size_tokens or 2 * h >= table.size:
        return 0
    one, two = int(table[h]), int(table[2 * h])
    return one if two == 2 * one and one > 0 else 0
