"""Multi-process load generation: one load point's streams spread over worker processes.

The problem: one Python event loop reads every chunk of a batched engine's step in turn. At 256
streams the chunks of one step land within a millisecond and the loop needs several to parse
them, so the last stream sees its chunk late: the instrument's own lag (benchmarks/loadgen).
Receive stamps taken at ``select()`` (:mod:`.clock`) take out the parse order, not the length of
the loop's iterations. Only fewer streams per loop shorten those.

The design: ``N`` worker processes, each with its own event loop and its own connections, run
:func:`.phase.run_phase` on a share of the load point, and their records are merged into the
one list :func:`.aggregate.aggregate` computes the metrics from.

* **One schedule.** The parent builds every request body and, in open loop, the whole arrival
  schedule from the seed; job ``i`` goes to worker ``i mod N`` and is sent at ``start +
  offset[i]``, so the offered load is exactly the single-process schedule. In closed loop the
  ``concurrency`` streams are split over the workers (their counts differ by at most one) and
  every stream takes its next job from one shared counter: the total in flight stays
  ``concurrency`` until the jobs run out, however unevenly the workers progress, and no job is
  sent twice or skipped.
* **One clock.** ``time.perf_counter`` is ``CLOCK_MONOTONIC`` on Linux, one clock for every
  process of the host, so record times from different workers compare directly. Each worker
  does its warm-up share, says it is ready, and the parent then names one start instant on that
  clock (a few milliseconds ahead) for all of them.
* **Processes by ``spawn``**, not ``fork``: the daemon has threads (a forked child of a
  threaded process may inherit a held lock), and a fresh interpreter costs a fraction of a
  second per load point, which is noise beside a level of a real benchmark.
* **Merging checks itself.** Every job index must come back exactly once among the records and
  the never-sent jobs; a duplicate or a loss is a bug and raises.

Why not threads: the GIL would serialise the parsing again. Why not one loop with uvloop: it is
faster per chunk but still one core, and it gives up the stamping selector.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from backends.loadgen.phase import PhasePlan, PhaseResult, run_phase
from backends.loadgen.records import RequestRecord
from backends.loadgen.target import TargetConfig

#: streams one worker serves before another worker pays off (benchmarks/loadgen: one loop keeps
#: its p99 lag near a millisecond up to about this many streams on a free core)
STREAMS_PER_WORKER = 64
#: how far ahead of "all workers ready" the shared start instant is set
START_LEAD_S = 0.02


def free_cores() -> int:
    """Cores this process may use that the machine's recent load leaves free (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, cores - math.ceil(busy))


def default_workers(concurrency: int | None, n_jobs: int) -> int:
    """Workers for a load point when the caller did not say: one per :data:`STREAMS_PER_WORKER`
    streams (the concurrency, or the jobs of an uncapped open-loop level), at most the free
    cores; one below that, where a process would cost more than it saves."""
    streams = concurrency if concurrency is not None else n_jobs
    wanted = math.ceil(max(1, streams) / STREAMS_PER_WORKER)
    return max(1, min(wanted, free_cores()))


def _worker_main(conn: Connection, target: TargetConfig, plan: PhasePlan, counter: Any) -> None:
    """A worker process: run its share on its own stamping event loop, send the records back."""
    from backends.loadgen.clock import run

    def take() -> int | None:
        with counter.get_lock():
            i = int(counter.value)
            if i >= len(plan.jobs):
                return None
            counter.value = i + 1
        return i

    async def start() -> float:
        conn.send(("ready", None))
        loop = asyncio.get_running_loop()
        message = await loop.run_in_executor(None, conn.recv)
        return float(message[1])

    try:
        result = run(run_phase(target, plan, take=None if plan.schedule is not None else take, start=start))
        conn.send(("done", result))
    except BaseException as exc:  # a bug in a worker must reach the parent, not vanish
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def run_workers(
    target: TargetConfig,
    plan: PhasePlan,
    n_workers: int,
    *,
    concurrency: int | None,
    measured: Callable[[RequestRecord], None] | None = None,
) -> PhaseResult:
    """Run one load point's ``plan`` over ``n_workers`` processes and merge what they measured."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    schedule = plan.schedule
    streams = _split(concurrency or 1, n_workers)
    caps = _split(concurrency, n_workers) if (schedule is not None and concurrency) else [0] * n_workers
    pools = _split(plan.pool, n_workers) if plan.pool else [0] * n_workers
    procs: list[Any] = []
    conns: list[Connection] = []
    loop = asyncio.get_running_loop()
    try:
        for w in range(n_workers):
            share = dataclasses.replace(
                plan,
                warm_jobs=list(plan.warm_jobs[w::n_workers]),
                streams=max(1, streams[w]),
                schedule=list(schedule[w::n_workers]) if schedule is not None else None,
                cap=caps[w] or None,
                pool=pools[w],
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, target, share, counter), daemon=True)
            proc.start()
            child.close()
            procs.append(proc)
            conns.append(parent)
        for conn in conns:
            kind, detail = await loop.run_in_executor(None, conn.recv)
            if kind != "ready":
                raise RuntimeError(f"a load generator worker failed before the start: {detail}")
        start_at = time.perf_counter() + START_LEAD_S
        for conn in conns:
            conn.send(("go", start_at))
        results: list[PhaseResult] = []
        for conn in conns:
            kind, detail = await loop.run_in_executor(None, conn.recv)
            if kind != "done":
                raise RuntimeError(f"a load generator worker failed: {detail}")
            results.append(detail)
    finally:
        for conn in conns:
            conn.close()
        for proc in procs:
            await loop.run_in_executor(None, proc.join, 10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    merged = merge(results, len(plan.jobs))
    if measured is not None:
        for rec in merged.records:
            measured(rec)
    return merged


def merge(results: Sequence[PhaseResult], n_jobs: int) -> PhaseResult:
    """The workers' results as one: every measured job once; a duplicate is a bug and raises."""
    records = [r for res in results for r in res.records]
    seen: set[int] = set()
    for rec in records:
        if rec.index in seen or not 0 <= rec.index < n_jobs:
            raise RuntimeError(f"load generator workers: job {rec.index} measured twice or out of range")
        seen.add(rec.index)
    started = sum(res.started for res in results)
    if len(records) > started:
        raise RuntimeError("load generator workers: more records than requests sent")
    return PhaseResult(
        records=sorted(records, key=lambda r: r.index),
        warmup=[r for res in results for r in res.warmup],
        started=started,
        # per-worker peaks need not coincide: their sum bounds the true peak from above
        max_in_flight=sum(res.max_in_flight for res in results),
    )
