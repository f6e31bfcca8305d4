"""Run the engine model without a server or a wall clock: for tests and for planning.

The scheduler and the cost model are pure, so a whole benchmark can be simulated in simulated
time in milliseconds of CPU: a closed loop of ``concurrency`` clients, each sending its next
request as soon as the previous one finished (the way ``autotuner bench --concurrency`` loads an
engine). The numbers are exactly what the HTTP server would produce at ``--time-scale`` →
infinity, minus network and event-loop effects. Unit tests check the engine's trade-offs
through this, and the docs' example numbers come from it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from backends.sim.build import EngineSetup
from backends.sim.kvcache import KVCache
from backends.sim.request import SimRequest
from backends.sim.scheduler import Scheduler, SchedulerLimits
from backends.sim.text import block_hashes


def new_scheduler(setup: EngineSetup) -> Scheduler:
    """A fresh scheduler with ``setup``'s limits, KV capacity and cost model."""
    config = setup.config
    kv = KVCache(setup.memory.num_blocks, config.block_size, prefix_caching=config.enable_prefix_caching)
    limits = SchedulerLimits(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=setup.max_num_batched_tokens,
        enable_chunked_prefill=config.enable_chunked_prefill,
    )
    return Scheduler(limits, kv, setup.cost)


@dataclass(frozen=True)
class Item:
    """One request of a simulated workload; ``prompt`` (words) only matters for prefix caching."""

    prompt_tokens: int
    output_tokens: int
    prompt: tuple[Hashable, ...] | None = None


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class OfflineResult:
    """Metrics of a simulated run, in the units of docs/architecture.md section 5 (simulated seconds)."""

    requests: list[SimRequest]
    duration_s: float
    gpus: int
    steps: int
    preemptions: int
    max_running: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return sum(r.num_output for r in self.requests)

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else math.inf

    @property
    def output_throughput_per_gpu(self) -> float:
        return self.output_throughput / self.gpus

    @property
    def request_throughput(self) -> float:
        return len(self.requests) / self.duration_s if self.duration_s > 0 else math.inf

    @property
    def ttfts_ms(self) -> list[float]:
        return [
            1000 * (r.first_token_at - r.arrived_at) for r in self.requests if r.first_token_at is not None
        ]

    @property
    def tpots_ms(self) -> list[float]:
        out = []
        for r in self.requests:
            if r.num_output > 1 and r.first_token_at is not None and r.finished_at is not None:
                out.append(1000 * (r.finished_at - r.first_token_at) / (r.num_output - 1))
        return out

    @property
    def e2es_ms(self) -> list[float]:
        return [1000 * (r.finished_at - r.arrived_at) for r in self.requests if r.finished_at is not None]

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {
            "completed": float(len(self.requests)),
            "duration_s": self.duration_s,
            "request_throughput": self.request_throughput,
            "output_throughput": self.output_throughput,
            "output_throughput_per_gpu": self.output_throughput_per_gpu,
            "preemptions": float(self.preemptions),
            "max_running": float(self.max_running),
        }
        for name, values in (("ttft", self.ttfts_ms), ("tpot", self.tpots_ms), ("e2e", self.e2es_ms)):
            out[f"{name}_mean_ms"] = statistics.fmean(values) if values else math.nan
            for q in (50, 90, 99):
                out[f"{name}_p{q}_ms"] = _quantile(values, q / 100)
        return out


def _request(setup: EngineSetup, index: int, item: Item) -> SimRequest:
    if item.prompt_tokens < 1 or item.output_tokens < 1:
        raise ValueError(f"item {index}: prompt_tokens and output_tokens must be >= 1")
    if item.prompt_tokens + item.output_tokens > setup.max_model_len:
        raise ValueError(
            f"item {index}: {item.prompt_tokens}+{item.output_tokens} tokens exceed max_model_len"
        )
    hashes: tuple[int, ...] = ()
    if item.prompt is not None and setup.config.enable_prefix_caching:
        hashes = block_hashes(item.prompt, setup.config.block_size)
    return SimRequest(f"offline-{index}", item.prompt_tokens, item.output_tokens, "length", hashes)


def run_closed_loop(
    setup: EngineSetup, items: Iterable[Item], concurrency: int, *, max_steps: int = 1 << 30
) -> OfflineResult:
    """Serve ``items`` with ``concurrency`` clients that each send the next item when theirs ends.

    ``max_steps`` > 1 lets the scheduler fold decode runs (same result, less CPU); 1 forces one
    step per call, which the equivalence test uses.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    sched = new_scheduler(setup)
    source = iter(enumerate(items))
    done: list[SimRequest] = []
    steps = 0
    max_running = 0

    def send_next() -> None:
        nxt = next(source, None)
        if nxt is not None:
            sched.add(_request(setup, *nxt))

    for _ in range(concurrency):
        send_next()
    while sched.has_work():
        result = sched.step(max_steps=max_steps)
        if result.steps == 0:  # cannot happen with a checked setup; never spin
            raise RuntimeError("scheduler made no progress")
        steps += result.steps
        max_running = max(max_running, len(sched.running))
        for req in result.finished:
            done.append(req)
            send_next()
    return OfflineResult(
        requests=done,
        duration_s=sched.now,
        gpus=setup.gpus,
        steps=steps,
        preemptions=sched.total_preemptions,
        max_running=max_running,
    )


def run_arrivals(
    setup: EngineSetup, items: Sequence[Item], arrivals: Sequence[float], *, max_steps: int = 1 << 30
) -> OfflineResult:
    """Serve ``items[i]`` arriving at simulated time ``arrivals[i]`` (seconds, any order).

    The replay of a live run: given the moments the live engine received its requests, what
    does the model say their TTFT and the run's duration were? A request that arrives during a
    step joins the next one, as in the live engine. Comparing a live run with this instead of
    with :func:`run_closed_loop` takes out the run's own dynamics (a closed loop of identical
    requests stays in lockstep offline, and a millisecond of jitter live breaks it, which moves
    throughput and TTFT by more than the server's overhead does), leaving what the live path
    adds: HTTP, parsing and the event loops, times the time scale.
    """
    if len(items) != len(arrivals):
        raise ValueError("one arrival time per item")
    order = sorted(range(len(items)), key=lambda i: arrivals[i])
    start = arrivals[order[0]] if order else 0.0
    sched = new_scheduler(setup)
    done: list[SimRequest] = []
    steps = 0
    max_running = 0
    k = 0
    while k < len(order) or sched.has_work():
        # everything due by now joins before the next step
        while k < len(order) and arrivals[order[k]] - start <= sched.now + 1e-12:
            req = _request(setup, order[k], items[order[k]])
            sched.add(req)
            # TTFT counts from the arrival, not from the step boundary where it joined
            req.arrived_at = arrivals[order[k]] - start
            k += 1
        if not sched.has_work():
            sched.now = arrivals[order[k]] - start  # idle until the next arrival
            continue
        budget = arrivals[order[k]] - start - sched.now if k < len(order) else math.inf
        result = sched.step(max_steps=max_steps, time_budget=budget)
        if result.steps == 0:
            raise RuntimeError("scheduler made no progress")
        steps += result.steps
        max_running = max(max_running, len(sched.running))
        done.extend(result.finished)
    return OfflineResult(
        requests=done,
        duration_s=sched.now,
        gpus=setup.gpus,
        steps=steps,
        preemptions=sched.total_preemptions,
        max_running=max_running,
    )
