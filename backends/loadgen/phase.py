"""One event loop's share of a load point: warm-up, then the measured phase, on its own connections.

:func:`run_phase` is what the single-process load point and every worker process
(:mod:`.workers`) run: closed loop (``streams`` streams, each taking its next job from ``take()``)
or open loop (each job sent at its scheduled instant, optionally capped in flight). The caller
(:mod:`.runner`) has already built every request body and the schedule, so nothing here encodes
JSON or draws random numbers while the clock runs.

One ``aiohttp.ClientSession`` per phase, its connection pool at least as large as the
concurrency so that no request queues inside the client; per-request work kept out of aiohttp's
path (one parsed URL, fixed headers on the session, no cookie jar). The garbage collector is off
while the measured phase runs (:func:`_quiet_gc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import aiohttp
import yarl

from backends.loadgen.clock import receive_clock
from backends.loadgen.records import RequestRecord
from backends.loadgen.stream import send_stamps, stream_request
from backends.loadgen.target import TargetConfig


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """No garbage-collector pauses inside a measured phase.

    A full collection over a load point's objects (hundreds of connections, thousands of chunk
    stamps) took 15-20 ms here at 256 streams: a stall every stream would see as latency the
    server never caused. So the collector is off while the level runs (the cyclic garbage of a
    level is small) and what existed before is frozen out of later collections; both are undone
    afterwards. Process-wide, like ``vllm bench serve``'s ``gc.freeze()``.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()


class _Level:
    """Shared state of one load point's requests (bodies, session, counters)."""

    def __init__(
        self,
        target: TargetConfig,
        session: aiohttp.ClientSession,
        stamp: Callable[[], float],
        timeout_s: float,
    ):
        self.target = target
        self.session = session
        self.stamp = stamp
        self.timeout_s = timeout_s
        self.chat = target.api == "chat"
        self.url = yarl.URL(target.endpoint)
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = 0

    async def send(
        self, index: int, body: bytes, expected_input: int | None, scheduled: float | None = None
    ) -> RequestRecord:
        rec = RequestRecord(
            index=index, send_time=0.0, expected_input_tokens=expected_input, scheduled_time=scheduled
        )
        self.started += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        try:
            await stream_request(
                self.session,
                self.url,
                body,
                rec,
                chat=self.chat,
                stamp=self.stamp,
                server_timestamps=self.target.server_timestamps,
                timeout_s=self.timeout_s,
            )
        finally:
            self.in_flight -= 1
        return rec


Job = tuple[int, bytes, int | None]
#: hands out the index of the next job to send (closed loop), None when there is none left
Take = Callable[[], int | None]


async def _closed_loop(
    level: _Level,
    jobs: Sequence[Job],
    streams: int,
    take: Take,
    done: Callable[[RequestRecord], None],
) -> None:
    async def worker() -> None:
        # take() has no await (in-process: an iterator; workers: a shared counter), so no two
        # streams, in this process or another, ever send the same job
        while (i := take()) is not None:
            index, body, expected = jobs[i]
            done(await level.send(index, body, expected))

    await asyncio.gather(*(worker() for _ in range(min(streams, len(jobs)))))


async def _open_loop(
    level: _Level,
    jobs: Sequence[Job],
    mine: Sequence[tuple[int, float]],
    start: float,
    cap: int | None,
    done: Callable[[RequestRecord], None],
) -> None:
    """Send ``jobs[i]`` at ``start + offset`` for each ``(i, offset)`` of ``mine``; each record
    keeps its scheduled time, so the client's own lateness is measured, not hidden."""
    slots = asyncio.Semaphore(cap) if cap else None
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int, body: bytes, expected: int | None, at: float) -> None:
        if slots is None:
            done(await level.send(index, body, expected, at))
            return
        async with slots:
            done(await level.send(index, body, expected, at))

    try:
        for i, offset in mine:
            index, body, expected = jobs[i]
            at = start + offset
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, body, expected, at)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


@dataclass
class PhasePlan:
    """What one event loop is to send (pickled to a worker process as it is)."""

    #: every job of the load point (a worker sends those that ``take()`` or its schedule give it)
    jobs: Sequence[Job]
    warm_jobs: Sequence[Job] = ()
    #: closed loop: streams of this loop (its warm-up runs at this many too)
    streams: int = 1
    #: open loop: ``(job, offset from the start)`` of this loop's sends; None: closed loop
    schedule: Sequence[tuple[int, float]] | None = None
    #: open loop: most requests of this loop in flight (None: no cap)
    cap: int | None = None
    #: connection pool size (0: unlimited)
    pool: int = 0
    timeout_s: float = 300.0
    max_duration_s: float | None = None


@dataclass
class PhaseResult:
    """What one event loop (the caller's, or one worker process's) measured."""

    records: list[RequestRecord]
    warmup: list[RequestRecord]
    started: int
    max_in_flight: int


async def run_phase(
    target: TargetConfig,
    plan: PhasePlan,
    *,
    take: Take | None = None,
    start: Callable[[], Awaitable[float]] | None = None,
    measured: Callable[[RequestRecord], None] | None = None,
) -> PhaseResult:
    """One event loop's share of a load point, on its own connections: warm-up first, then
    (after ``start()`` says when, on the ``perf_counter`` clock every process shares) the
    measured phase: closed loop over ``take()`` with ``plan.streams`` streams, or open loop over
    ``plan.schedule``. The single-process load point and every worker process run this."""
    jobs, warm_jobs, schedule = plan.jobs, plan.warm_jobs, plan.schedule
    timeout_s, max_duration_s = plan.timeout_s, plan.max_duration_s
    connector = aiohttp.TCPConnector(limit=plan.pool, limit_per_host=0, force_close=False)
    # the request timeout is stream_request's own (one timer per request, not one per read)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 30.0))
    records: list[RequestRecord] = []
    warm_records: list[RequestRecord] = []

    def done(rec: RequestRecord) -> None:
        records.append(rec)
        if measured is not None:
            measured(rec)

    # per-request work kept out of aiohttp's path: one parsed URL, fixed headers on the session,
    # no cookie jar (an inference API sets none)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"Content-Type": "application/json", **target.headers},
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        trace_configs=[send_stamps()],
    ) as session:
        stamp = receive_clock()
        if warm_jobs:
            warm_level = _Level(target, session, stamp, timeout_s)
            warm_iter = iter(range(len(warm_jobs)))
            await _closed_loop(
                warm_level,
                warm_jobs,
                plan.streams if schedule is None else min(len(warm_jobs), 8),
                lambda: next(warm_iter, None),
                warm_records.append,
            )
        level = _Level(target, session, stamp, timeout_s)
        # the collection that _quiet_gc starts with can take 100 ms on a loaded machine: the
        # start instant is named after it, or every scheduled send would be late by that much
        with _quiet_gc():
            t0 = await start() if start is not None else time.perf_counter()
            if schedule is not None:
                phase = _open_loop(level, jobs, schedule, t0, plan.cap, done)
            else:
                assert take is not None
                phase = _closed_loop(level, jobs, plan.streams, take, done)
            delay = t0 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if max_duration_s:
                with contextlib.suppress(TimeoutError):  # the deadline, not a request timeout
                    await asyncio.wait_for(phase, max(0.0, t0 + max_duration_s - time.perf_counter()))
            else:
                await phase
    return PhaseResult(records, warm_records, level.started, level.max_in_flight)
