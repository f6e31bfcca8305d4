"""Driving one load point: closed loop by concurrency, open loop by request rate.

* **Closed loop** (``concurrency=N``): N workers each send a request, wait for its last byte and
  send the next; exactly ``min(N, remaining)`` requests are in flight.
* **Open loop** (``request_rate=R``): requests are sent at the times drawn by
  :func:`schedule.arrival_offsets`, whether or not earlier ones finished; ``concurrency`` given as
  well caps the number in flight (like ``vllm bench serve --max-concurrency``), and a request
  waiting for a slot is timed from when it is actually sent.

Warm-up requests (the first ``options.warmup`` prompts of the list, reused) run before the measured
phase, at the level's concurrency, and are reported apart, never counted. ``max_duration_s``
stops sending at the deadline and cancels requests still in flight; they are reported as
cancelled (a note and ``extra["cancelled"]``), not as server failures, because the server was
never given the chance to finish them.

Request bodies and the open-loop schedule are built here, before the clock starts; the sending
itself is :func:`.phase.run_phase`, in this event loop or spread over worker processes
(:mod:`.workers`). The options that are the same at every level come as one
:class:`~.options.LoadOptions`.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from backends.loadgen import workers
from backends.loadgen.aggregate import aggregate
from backends.loadgen.options import DEFAULT_OPTIONS, LoadOptions
from backends.loadgen.phase import Job, PhasePlan, PhaseResult, run_phase
from backends.loadgen.records import RequestRecord
from backends.loadgen.schedule import arrival_offsets
from backends.loadgen.target import PromptLike, TargetConfig, fetch_model
from specs.records import LoadPointRecord

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
    #: the options it ran with (the GPU count and SLOs are what :func:`summarize_run` judges by)
    options: LoadOptions = DEFAULT_OPTIONS
    #: requests in flight when ``max_duration_s`` ran out, cancelled and not counted
    cancelled: int = 0
    #: most requests in flight at once during the measured phase
    max_in_flight: int = 0
    #: ``time.time() - time.perf_counter()`` at the start: converts record times to wall clock
    wall_offset: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: processes that generated the load (1: this event loop alone)
    workers: int = 1


def _check_load(concurrency: int | None, request_rate: float | None) -> None:
    if concurrency is None and request_rate is None:
        raise ValueError("give concurrency, request_rate or both")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    if request_rate is not None and not request_rate > 0:
        raise ValueError(f"request rate must be > 0, got {request_rate!r}")


def _raise_fd_limit(needed: int) -> None:
    """Open-loop bursts need a socket per request in flight: lift the soft limit if we may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _expected_input(req: PromptLike) -> int | None:
    value = getattr(req, "input_tokens", None)
    return value if isinstance(value, int) else None


def _plan(
    target: TargetConfig,
    model: str,
    requests: Sequence[PromptLike],
    concurrency: int | None,
    request_rate: float | None,
    options: LoadOptions,
) -> PhasePlan:
    """Every request body, the warm-up and (open loop) the arrival schedule, built before the clock
    starts. The schedule is in wall seconds: ``request_rate`` is in engine time."""
    jobs: list[Job] = [
        (i, target.body(model, r.prompt, int(r.max_tokens)), _expected_input(r))
        for i, r in enumerate(requests)
    ]
    n_warm = options.warmup if jobs else 0
    warm_jobs = [(i, jobs[i % len(jobs)][1], jobs[i % len(jobs)][2]) for i in range(n_warm)]
    schedule: list[tuple[int, float]] | None = None
    if request_rate is None:
        pool = concurrency or 1
        _raise_fd_limit(pool)
    else:
        pool = concurrency or 0
        _raise_fd_limit(concurrency or len(jobs))
        rate = request_rate * options.time_scale
        schedule = list(
            enumerate(arrival_offsets(len(jobs), rate, burstiness=options.burstiness, seed=options.seed))
        )
    return PhasePlan(
        jobs,
        warm_jobs,
        streams=pool if schedule is None else 1,
        schedule=schedule,
        cap=concurrency if schedule is not None else None,
        pool=pool,
        timeout_s=options.timeout_s,
        max_duration_s=options.max_duration_s,
    )


def _worker_count(options: LoadOptions, concurrency: int | None, n_jobs: int) -> int:
    wanted = workers.default_workers(concurrency, n_jobs) if options.workers is None else options.workers
    return min(max(1, wanted), max(1, n_jobs), concurrency or n_jobs or 1)


def _counting(progress: Progress | None, total: int) -> Callable[[RequestRecord], None]:
    """The per-request callback: counts done and failed for ``progress``."""
    done = failed = 0

    def measured(rec: RequestRecord) -> None:
        nonlocal done, failed
        done += 1
        if not rec.ok:
            failed += 1
        if progress is not None:
            progress(done, failed, total)

    return measured


def _phase_notes(phase: PhaseResult, n_jobs: int, options: LoadOptions) -> list[str]:
    """What a reader of the metrics must know about how the phase went: a deadline that cut it
    short, warm-up requests that failed."""
    notes: list[str] = []
    cancelled = phase.started - len(phase.records)
    unsent = n_jobs - phase.started
    if cancelled:
        notes.append(
            f"max_duration_s ({options.max_duration_s:g} s) ran out: {cancelled} requests in flight were "
            f"cancelled and {unsent} never sent; neither is counted"
        )
    elif options.max_duration_s and unsent > 0:
        notes.append(f"max_duration_s ran out: {unsent} requests never sent")
    warm_failed = [r for r in phase.warmup if not r.ok]
    if warm_failed:
        kinds = sorted({r.error or "?" for r in warm_failed})
        notes.append(
            f"{len(warm_failed)} of {len(phase.warmup)} warm-up requests failed ({', '.join(kinds)})"
        )
    return notes


async def collect(
    target: TargetConfig,
    requests: Sequence[PromptLike],
    *,
    concurrency: int | None = None,
    request_rate: float | None = None,
    options: LoadOptions = DEFAULT_OPTIONS,
    progress: Progress | None = None,
) -> LoadPointRun:
    """Send ``requests`` at one load level and return every request's record.

    ``request_rate`` is in requests per second of the *engine's* time: with ``options.time_scale``
    (engine seconds per wall second, see :mod:`.aggregate`) the client sends ``request_rate *
    time_scale`` per wall second. ``options.workers`` > 1 spreads the streams over that many
    processes (:mod:`.workers`); None picks a number from the free cores and the load
    (:func:`.workers.default_workers`).

    Raises ValueError for an impossible load, and (only when ``target.model`` is None and must be
    looked up) TransientError/UserError from :func:`target.fetch_model`. Server faults during the
    run never raise: they are records with an error kind.
    """
    _check_load(concurrency, request_rate)
    model = target.model or await fetch_model(target, timeout_s=min(options.timeout_s, 30.0))
    plan = _plan(target, model, requests, concurrency, request_rate, options)
    n_jobs = len(plan.jobs)
    n_workers = _worker_count(options, concurrency, n_jobs)
    measured = _counting(progress, n_jobs)
    wall_offset = time.time() - time.perf_counter()
    notes: list[str] = []
    if n_workers > 1:
        phase = await workers.run_workers(target, plan, n_workers, concurrency=concurrency, measured=measured)
        notes.append(f"load generated by {n_workers} worker processes sharing one schedule and clock")
    else:
        it = iter(range(n_jobs))
        take = None if plan.schedule is not None else (lambda: next(it, None))
        phase = await run_phase(target, plan, take=take, measured=measured)
    notes.extend(_phase_notes(phase, n_jobs, options))
    return LoadPointRun(
        load_kind="request_rate" if request_rate is not None else "concurrency",
        load_value=float(request_rate if request_rate is not None else (concurrency or 1)),
        model=model,
        records=sorted(phase.records, key=lambda r: r.index),
        warmup=phase.warmup,
        options=options,
        cancelled=phase.started - len(phase.records),
        max_in_flight=phase.max_in_flight,
        wall_offset=wall_offset,
        notes=notes,
        workers=n_workers,
    )


def summarize_run(run: LoadPointRun) -> LoadPointRecord:
    """Aggregate a run into the metric vocabulary (judged by the GPU count and SLOs of its
    options), with how it was measured in ``measured`` and the run's facts in ``extra``."""
    options = run.options
    result = aggregate(
        run.records,
        load_kind=run.load_kind,
        load_value=run.load_value,
        gpus=options.gpus,
        slo=options.slo,
        notes=run.notes,
        time_scale=options.time_scale,
    )
    result.measured.update({"workers": run.workers, "max_in_flight": run.max_in_flight})
    result.extra.update(
        {
            "model": run.model,
            "cancelled": run.cancelled,
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
    options: LoadOptions = DEFAULT_OPTIONS,
    progress: Progress | None = None,
) -> LoadPointRecord:
    """Measure one load level and return its metrics (docs/architecture.md section 5), in the
    engine's time (``options.time_scale``, see :func:`collect`).

    ``request_rate`` given means open loop (``math.inf`` = all at once), optionally capped by
    ``concurrency``; otherwise closed loop at ``concurrency``.
    """
    run = await collect(
        target,
        requests,
        concurrency=concurrency,
        request_rate=request_rate,
        options=options,
        progress=progress,
    )
    return summarize_run(run)
