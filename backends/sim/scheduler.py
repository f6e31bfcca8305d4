"""The continuous-batching scheduler, after vLLM V1's: pure, synchronous, on a simulated clock.

Each step:

1. **Running** sequences first, in admission order: each gets its remaining prompt chunk or one
   decode token, within the step's token budget (``max_num_batched_tokens``). When the KV cache
   has no block for one of them, the newest running sequence is **preempted** (its blocks freed,
   recomputed later from scratch, prefix cache permitting) until the block fits.
2. **Waiting** requests are admitted in arrival order while there are sequence slots
   (``max_num_seqs``), budget and blocks, and no preemption happened this step. With chunked
   prefill a long prompt takes what budget is left and continues next step; without it the
   whole prompt must fit the leftover budget, or it (and everyone behind it) waits.
3. The step's duration comes from the :class:`~backends.sim.roofline.CostModel`; every sequence
   whose computed tokens caught up with its length samples one token at the step's end.

The clock (:attr:`Scheduler.now`) only moves by step durations, and nothing here reads the wall
clock or draws random numbers, so the same arrivals give the same schedule, bit for bit.

**Decode runs.** At hundreds of sequences and a large time scale, one Python iteration per
simulated step would cost more CPU than the engine is allowed. When a step leaves a stable
state — every running sequence decoding, no one waiting who could be admitted, enough free
blocks — the next steps are known in advance until the first sequence finishes: :meth:`step`
folds up to ``max_steps`` of them into one update. The result is the same as stepping one by one
(a unit test checks it).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from backends.sim.kvcache import KVCache
from backends.sim.request import SimRequest, Status
from backends.sim.roofline import CostModel


@dataclass(frozen=True)
class SchedulerLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_chunked_prefill: bool = True


@dataclass
class StepResult:
    """What one call of :meth:`Scheduler.step` did (one step, or a folded run of decode steps)."""

    steps: int = 0
    duration: float = 0.0
    scheduled_tokens: int = 0
    preempted: int = 0
    #: requests that produced their first token
    started: list[SimRequest] = field(default_factory=list)
    finished: list[SimRequest] = field(default_factory=list)

    @property
    def has_events(self) -> bool:
        """A request got its first token or finished: something a client times precisely."""
        return bool(self.started or self.finished)


class Scheduler:
    def __init__(self, limits: SchedulerLimits, kv: KVCache, cost: CostModel) -> None:
        self.limits = limits
        self.kv = kv
        self.cost = cost
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        #: simulated seconds since the engine started
        self.now = 0.0
        self.total_steps = 0
        self.total_preemptions = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.finished_total = 0
        #: sums of simulated latencies, for vLLM-style ``_sum``/``_count`` metrics
        self.ttft_sum = 0.0
        self.started_total = 0
        self.e2e_sum = 0.0

    # -- requests ------------------------------------------------------------------------------

    def add(self, req: SimRequest) -> None:
        req.status = Status.WAITING
        req.arrived_at = self.now
        self.waiting.append(req)

    def abort(self, req: SimRequest) -> None:
        """Drop a request wherever it is (client gone); idempotent."""
        if req.done:
            return
        if req.status is Status.RUNNING:
            self.running.remove(req)
        else:
            self.waiting.remove(req)
        self.kv.free(req)
        req.status = Status.ABORTED

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- stepping ------------------------------------------------------------------------------

    def step(
        self, max_steps: int = 1, time_budget: float = math.inf, *, stop_on_events: bool = False
    ) -> StepResult:
        """Run one scheduler step, then fold up to ``max_steps - 1`` further decode steps while
        their total time stays under ``time_budget`` and the state is stable.

        ``stop_on_events``: do not fold after a step in which a request got its first token or
        finished, so that the caller can deliver that moment exactly. A result with
        ``steps == 0`` means nothing could be scheduled (no work).
        """
        result = StepResult()
        self._one_step(result)
        if (
            result.steps
            and max_steps > 1
            and result.duration < time_budget
            and not (stop_on_events and result.has_events)
            and self._stable()
        ):
            self._decode_run(result, max_steps - 1, time_budget - result.duration)
        return result

    def _one_step(self, result: StepResult) -> None:
        """One vLLM scheduler step: the running requests first (preempting from the back when the
        KV cache is full), then, if nobody was preempted, admissions from the queue; then the
        step's cost, and a token for every request whose prompt is now computed."""
        scheduled: list[tuple[SimRequest, int]] = []
        budget, preempted = self._schedule_running(self.limits.max_num_batched_tokens, scheduled)
        if not preempted:
            self._admit_waiting(budget, scheduled)
        result.preempted += preempted
        self.total_preemptions += preempted
        if scheduled:
            self._sample(self._execute(scheduled, result), result)

    def _schedule_running(self, budget: int, scheduled: list[tuple[SimRequest, int]]) -> tuple[int, int]:
        """Schedule the running requests in order within ``budget`` tokens; a request the KV
        cache cannot grow for preempts the newest running request (itself, last). Returns the
        budget left and the number preempted."""
        kv = self.kv
        running = self.running
        preempted = 0
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            n = min(req.num_tokens - req.num_computed, budget)
            while not kv.grow(req, req.num_computed + n):
                victim = running.pop()
                self._preempt(victim)
                preempted += 1
                if victim is req:
                    break
            else:
                scheduled.append((req, n))
                budget -= n
                i += 1
        return budget, preempted

    def _admit_waiting(self, budget: int, scheduled: list[tuple[SimRequest, int]]) -> None:
        """Admit queued requests in order while sequences, tokens and KV blocks allow, each
        starting after its prefix-cache hits (a prompt cut to the budget with chunked prefill)."""
        kv = self.kv
        running = self.running
        waiting = self.waiting
        while waiting and len(running) < self.limits.max_num_seqs and budget > 0:
            req = waiting[0]
            hits = kv.match(req)
            cached = hits * kv.block_size
            n = req.num_tokens - cached
            if n > budget:
                if not self.limits.enable_chunked_prefill:
                    break
                n = budget
            if not kv.admit(req, hits, cached + n):
                break
            waiting.popleft()
            if req.num_output == 0 and not req.preemptions:
                req.cached_tokens = cached
                self.prompt_tokens_total += req.prompt_tokens
            req.num_computed = cached
            req.status = Status.RUNNING
            running.append(req)
            scheduled.append((req, n))
            budget -= n

    def _execute(self, scheduled: list[tuple[SimRequest, int]], result: StepResult) -> list[SimRequest]:
        """Compute the scheduled tokens: advance the clock by the step's cost, commit full
        blocks to the prefix cache; returns the requests that sample a token this step."""
        tokens = 0
        pairs = 0.0
        kv_read = 0
        sampling: list[SimRequest] = []
        for req, n in scheduled:
            s = req.num_computed
            tokens += n
            pairs += n * s + n * (n + 1) / 2
            kv_read += s
            req.num_computed = s + n
            if req.num_computed >= req.num_tokens:
                sampling.append(req)
        duration = self.cost.step_time(tokens, pairs, kv_read, len(scheduled), len(sampling))
        self.now += duration
        self.total_steps += 1
        result.steps += 1
        result.duration += duration
        result.scheduled_tokens += tokens
        kv = self.kv
        if kv.prefix_caching:
            for req, _ in scheduled:
                if req.kv_committed < len(req.block_hashes):
                    kv.commit(req)
        return sampling

    def _sample(self, sampling: list[SimRequest], result: StepResult) -> None:
        """One output token for each of ``sampling`` at the step's end; the finished ones leave."""
        now = self.now
        done = False
        for req in sampling:
            req.num_output += 1
            if req.first_token_at is None:
                req.first_token_at = now
                self.ttft_sum += now - req.arrived_at
                self.started_total += 1
                result.started.append(req)
            if req.num_output >= req.target_tokens:
                done = True
        self.generation_tokens_total += len(sampling)
        if done:
            self._finish_done(result)

    def _preempt(self, req: SimRequest) -> None:
        """vLLM's recompute preemption: drop the KV, go back to the head of the queue."""
        self.kv.free(req)
        req.num_computed = 0
        req.preemptions += 1
        req.status = Status.WAITING
        self.waiting.appendleft(req)

    def _finish_done(self, result: StepResult) -> None:
        keep: list[SimRequest] = []
        for req in self.running:
            if req.num_output >= req.target_tokens:
                req.status = Status.FINISHED
                req.finished_at = self.now
                self.e2e_sum += self.now - req.arrived_at
                self.kv.free(req)
                result.finished.append(req)
                self.finished_total += 1
            else:
                keep.append(req)
        self.running = keep

    # -- folded decode runs --------------------------------------------------------------------

    def _decode_growth(self, k: int) -> int:
        """New blocks the running sequences need for ``k`` more decode steps."""
        kv = self.kv
        bs = kv.block_size
        need = 0
        for req in self.running:
            extra = -(-(req.num_computed + k) // bs) - len(req.kv_hashes) - req.kv_anon
            if extra > 0:
                need += extra
        return need

    def _stable(self) -> bool:
        """True when the coming steps are pure decode steps of the same batch (see module doc)."""
        running = self.running
        if not running:
            return False
        for req in running:
            if req.num_computed != req.num_tokens - 1:
                return False
        if not self.waiting:
            return True
        # someone waits: folding is only safe if they could not be admitted next step either,
        # and every reason that stops them (slots, budget, blocks) only tightens while decoding
        limits = self.limits
        if len(running) >= limits.max_num_seqs:
            return True
        budget = limits.max_num_batched_tokens - len(running)
        if budget <= 0:
            return True
        head = self.waiting[0]
        hits = self.kv.match(head)
        cached = hits * self.kv.block_size
        n = head.num_tokens - cached
        if n > budget:
            if not limits.enable_chunked_prefill:
                return True
            n = budget
        need = self.kv.blocks_for(cached + n) - hits
        return need > self.kv.free_blocks - self._decode_growth(1)

    def _decode_run(self, result: StepResult, max_steps: int, time_budget: float) -> None:
        running = self.running
        n = len(running)
        k_max = min(max_steps, min(req.target_tokens - req.num_output for req in running))
        free = self.kv.free_blocks
        if self._decode_growth(k_max) > free:
            lo, hi = 0, k_max  # largest k whose growth fits: growth is monotone in k
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._decode_growth(mid) <= free:
                    lo = mid
                else:
                    hi = mid - 1
            k_max = lo
        if k_max <= 0:
            return
        ctx = sum(req.num_computed for req in running)
        step_time = self.cost.step_time
        elapsed = 0.0
        k = 0
        while k < k_max and elapsed < time_budget:
            # step j reads the context of every sequence and writes one token each
            elapsed += step_time(n, ctx + n, ctx, n, n)
            ctx += n
            k += 1
        kv = self.kv
        for req in running:
            req.num_computed += k
            req.num_output += k
            kv.grow(req, req.num_computed)
        self.now += elapsed
        self.total_steps += k
        self.generation_tokens_total += k * n
        result.steps += k
        result.duration += elapsed
        result.scheduled_tokens += k * n
        if any(req.num_output >= req.target_tokens for req in running):
            self._finish_done(result)
