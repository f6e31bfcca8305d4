"""Driving one load point: closed loop by concurrency, open loop by request rate.

* **Closed loop** (``concurrency=N``): N workers each send a request, wait for its last byte and
  send the next; exactly ``min(N, remaining)`` requests are in flight.
* **Open loop** (``request_rate=R``): requests are sent at the times drawn by
  :func:`schedule.arrival_offsets`, whether or not earlier ones finished; ``concurrency`` given as
  well caps the number in flight (like ``vllm bench serve --max-concurrency``), and a request
  waiting for a slot is timed from when it is actually sent.

Warm-up requests (the first ``warmup`` prompts of the list, reused) run before the measured
phase, at the level's concurrency, and are reported apart, never counted. ``max_duration_s``
stops sending at the deadline and cancels requests still in flight; they are reported as
cancelled (a note and ``extra["cancelled"]``), not as server failures, because the server was
never given the chance to finish them.

One ``aiohttp.ClientSession`` per load point, its connection pool at least as large as the
concurrency so that no request queues inside the client. Request bodies are encoded before the
clock starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import yarl

from backends.loadgen.aggregate import aggregate
from backends.loadgen.clock import receive_clock
from backends.loadgen.records import RequestRecord
from backends.loadgen.schedule import arrival_offsets
from backends.loadgen.stream import send_stamps, stream_request
from backends.loadgen.target import PromptLike, TargetConfig, fetch_model
from backends.measure import LoadPointResult
from specs.model import SloBound

#: ``progress(done, failed, total)`` after every measured request
Progress = Callable[[int, int, int], None]


@dataclass
class LoadPointRun:
    """The raw outcome of one load point, before aggregation."""

    load_kind: Literal["concurrency", "request_rate"]
    load_value: float
    model: str
    records: list[RequestRecord]
    warmup: list[RequestRecord]
    #: requests in flight when ``max_duration_s`` ran out, cancelled and not counted
    cancelled: int = 0
    #: most requests in flight at once during the measured phase
    max_in_flight: int = 0
    #: ``time.time() - time.perf_counter()`` at the start: converts record times to wall clock
    wall_offset: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: engine seconds per wall second (see :mod:`.aggregate`)
    time_scale: float = 1.0
    #: processes that generated the load (1: this event loop alone)
    workers: int = 1


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


def _check_load(concurrency: int | None, request_rate: float | None, burstiness: float) -> None:
    if concurrency is None and request_rate is None:
        raise ValueError("give concurrency, request_rate or both")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    if request_rate is not None and not request_rate > 0:
        raise ValueError(f"request rate must be > 0, got {request_rate!r}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness!r}")


def _raise_fd_limit(needed: int) -> None:
    """Open-loop bursts need a socket per request in flight: lift the soft limit if we may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class _Level:
    """Shared state of one load point's requests (bodies, session, counters)."""

    def __init__(self, target: TargetConfig, session: aiohttp.ClientSession, stamp: Callable[[], float]):
        self.target = target
        self.session = session
        self.stamp = stamp
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
            )
        finally:
            self.in_flight -= 1
        return rec


def _expected_input(req: PromptLike) -> int | None:
    value = getattr(req, "input_tokens", None)
    return value if isinstance(value, int) else None


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
class PhaseResult:
    """What one event loop (the caller's, or one worker process's) measured."""

    records: list[RequestRecord]
    warmup: list[RequestRecord]
    started: int
    max_in_flight: int


async def run_phase(
    target: TargetConfig,
    jobs: Sequence[Job],
    *,
    warm_jobs: Sequence[Job] = (),
    streams: int = 1,
    take: Take | None = None,
    schedule: Sequence[tuple[int, float]] | None = None,
    cap: int | None = None,
    pool: int = 0,
    timeout_s: float = 300.0,
    max_duration_s: float | None = None,
    start: Callable[[], Awaitable[float]] | None = None,
    measured: Callable[[RequestRecord], None] | None = None,
) -> PhaseResult:
    """One event loop's share of a load point, on its own connections: warm-up first, then
    (after ``start()`` says when, on the ``perf_counter`` clock every process shares) the
    measured phase: closed loop over ``take()`` with ``streams`` streams, or open loop over
    ``schedule``. The single-process load point and every worker process run this."""
    connector = aiohttp.TCPConnector(limit=pool, limit_per_host=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 30.0))
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
            warm_level = _Level(target, session, stamp)
            warm_iter = iter(range(len(warm_jobs)))
            await _closed_loop(
                warm_level,
                warm_jobs,
                streams if schedule is None else min(len(warm_jobs), 8),
                lambda: next(warm_iter, None),
                warm_records.append,
            )
        level = _Level(target, session, stamp)
        # the collection that _quiet_gc starts with can take 100 ms on a loaded machine: the
        # start instant is named after it, or every scheduled send would be late by that much
        with _quiet_gc():
            t0 = await start() if start is not None else time.perf_counter()
            if schedule is not None:
                phase = _open_loop(level, jobs, schedule, t0, cap, done)
            else:
                assert take is not None
                phase = _closed_loop(level, jobs, streams, take, done)
            delay = t0 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if max_duration_s:
                with contextlib.suppress(TimeoutError):  # the deadline, not a request timeout
                    await asyncio.wait_for(phase, max(0.0, t0 + max_duration_s - time.perf_counter()))
            else:
                await phase
    return PhaseResult(records, warm_records, level.started, level.max_in_flight)


async def collect(
    target: TargetConfig,
    requests: Sequence[PromptLike],
    *,
    concurrency: int | None = None,
    request_rate: float | None = None,
    burstiness: float = 1.0,
    warmup: int = 0,
    seed: int = 0,
    timeout_s: float = 300.0,
    max_duration_s: float | None = None,
    progress: Progress | None = None,
    time_scale: float = 1.0,
    workers: int | None = 1,
) -> LoadPointRun:
    """Send ``requests`` at one load level and return every request's record.

    ``request_rate`` is in requests per second of the *engine's* time: with ``time_scale`` (engine
    seconds per wall second, see :mod:`.aggregate`) the client sends ``request_rate *
    time_scale`` per wall second. ``workers`` > 1 spreads the streams over that many processes
    (:mod:`.workers`); None picks a number from the free cores and the load
    (:func:`.workers.default_workers`).

    Raises ValueError for an impossible load, and (only when ``target.model`` is None and must be
    looked up) TransientError/UserError from :func:`target.fetch_model`. Server faults during the
    run never raise: they are records with an error kind.
    """
    _check_load(concurrency, request_rate, burstiness)
    if timeout_s <= 0:
        raise ValueError("timeout_s must be > 0")
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
    model = target.model or await fetch_model(target, timeout_s=min(timeout_s, 30.0))
    jobs: list[Job] = [
        (i, target.body(model, r.prompt, int(r.max_tokens)), _expected_input(r))
        for i, r in enumerate(requests)
    ]
    n_warm = warmup if jobs else 0
    warm_jobs = [(i, jobs[i % len(jobs)][1], jobs[i % len(jobs)][2]) for i in range(n_warm)]

    open_loop = request_rate is not None
    if open_loop:
        pool = concurrency or 0
        _raise_fd_limit(concurrency or len(jobs))
    else:
        pool = concurrency or 1
        _raise_fd_limit(pool)
    load_kind: Literal["concurrency", "request_rate"] = "request_rate" if open_loop else "concurrency"
    load_value = float(request_rate if request_rate is not None else (concurrency or 1))
    schedule: list[tuple[int, float]] | None = None
    if request_rate is not None:
        offsets = arrival_offsets(len(jobs), request_rate * time_scale, burstiness=burstiness, seed=seed)
        schedule = list(enumerate(offsets))

    from backends.loadgen import workers as _workers  # the process pool imports this module

    n_workers = _workers.default_workers(concurrency, len(jobs)) if workers is None else max(1, workers)
    n_workers = min(n_workers, max(1, len(jobs)), concurrency or len(jobs) or 1)
    failed = 0
    notes: list[str] = []
    measured_count = 0

    def measured(rec: RequestRecord) -> None:
        nonlocal failed, measured_count
        measured_count += 1
        if not rec.ok:
            failed += 1
        if progress is not None:
            progress(measured_count, failed, len(jobs))

    wall_offset = time.time() - time.perf_counter()
    if n_workers > 1:
        phase = await _workers.run_workers(
            target,
            jobs,
            n_workers,
            warm_jobs=warm_jobs,
            concurrency=concurrency,
            schedule=schedule,
            pool=pool,
            timeout_s=timeout_s,
            max_duration_s=max_duration_s,
            measured=measured,
        )
        notes.append(f"load generated by {n_workers} worker processes sharing one schedule and clock")
    else:
        it = iter(range(len(jobs)))
        phase = await run_phase(
            target,
            jobs,
            warm_jobs=warm_jobs,
            streams=(concurrency or 1) if not open_loop else min(n_warm, 8) or 1,
            take=None if open_loop else (lambda: next(it, None)),
            schedule=schedule,
            cap=concurrency if open_loop else None,
            pool=pool,
            timeout_s=timeout_s,
            max_duration_s=max_duration_s,
            measured=measured,
        )
    records = phase.records
    cancelled = phase.started - len(records)
    if cancelled:
        notes.append(
            f"max_duration_s ({max_duration_s:g} s) ran out: {cancelled} requests in flight were cancelled "
            f"and {len(jobs) - phase.started} never sent; neither is counted"
        )
    elif max_duration_s and phase.started < len(jobs):
        notes.append(f"max_duration_s ran out: {len(jobs) - phase.started} requests never sent")
    warm_records = phase.warmup
    warm_failed = [r for r in warm_records if not r.ok]
    if warm_failed:
        kinds = sorted({r.error or "?" for r in warm_failed})
        notes.append(
            f"{len(warm_failed)} of {len(warm_records)} warm-up requests failed ({', '.join(kinds)})"
        )
    return LoadPointRun(
        load_kind=load_kind,
        load_value=load_value,
        model=model,
        records=sorted(records, key=lambda r: r.index),
        warmup=warm_records,
        cancelled=cancelled,
        max_in_flight=phase.max_in_flight,
        wall_offset=wall_offset,
        notes=notes,
        time_scale=time_scale,
        workers=n_workers,
    )


def summarize_run(
    run: LoadPointRun, *, gpus: int = 1, slo: Mapping[str, SloBound] | None = None
) -> LoadPointResult:
    """Aggregate a run into the metric vocabulary, with the run's facts in ``extra``."""
    result = aggregate(
        run.records,
        load_kind=run.load_kind,
        load_value=run.load_value,
        gpus=gpus,
        slo=slo,
        notes=run.notes,
        time_scale=run.time_scale,
    )
    result.extra.update(
        {
            "model": run.model,
            "cancelled": run.cancelled,
            "max_in_flight": run.max_in_flight,
            "workers": run.workers,
            "warmup": {"sent": len(run.warmup), "failed": sum(1 for r in run.warmup if not r.ok)},
        }
    )
    return result


async def run_load_point(
    target: TargetConfig,
    requests: Sequence[PromptLike],
    *,
    concurrency: int | None = None,
    request_rate: float | None = None,
    burstiness: float = 1.0,
    warmup: int = 0,
    seed: int = 0,
    gpus: int = 1,
    slo: Mapping[str, SloBound] | None = None,
    timeout_s: float = 300.0,
    max_duration_s: float | None = None,
    progress: Progress | None = None,
    time_scale: float = 1.0,
    workers: int | None = 1,
) -> LoadPointResult:
    """Measure one load level and return its metrics (docs/architecture.md section 5), in the
    engine's time (``time_scale``, see :func:`collect`).

    ``request_rate`` given means open loop (``math.inf`` = all at once), optionally capped by
    ``concurrency``; otherwise closed loop at ``concurrency``.
    """
    run = await collect(
        target,
        requests,
        concurrency=concurrency,
        request_rate=request_rate,
        burstiness=burstiness,
        warmup=warmup,
        seed=seed,
        timeout_s=timeout_s,
        max_duration_s=max_duration_s,
        progress=progress,
        time_scale=time_scale,
        workers=workers,
    )
    return summarize_run(run, gpus=gpus, slo=slo)
