"""Run one configuration end to end: lease GPUs, deploy, wait ready, warm up, measure every load
point, tear down — always — and say what happened as a :class:`~reconciler.study.Measurement`.

Engine trouble never raises out of here: it becomes a FAILED measurement with a classified
reason and the engine's log tail, so the study goes on. A shutdown (``cancel``) becomes an
*interrupted* measurement, which the study re-queues instead of recording.

Failures on the host's side are told apart from the configuration's
(:func:`specs.records.failure_side`): an engine whose executable is missing is found before
launch (``executable_missing``), too few GPUs is ``gpus_unavailable``; neither is reused by a
later study, so installing the engine or adding GPUs re-measures the configuration.

**One loop over load levels.** Fixed levels and capacity search are both a
:class:`~backends.loadgen.capacity.LevelPlan` that the same loop drives, so every level gets the
same hooks: the cancel check, a fresh share of the experiment's time budget, the engine's cache
reset, fresh prompts (:class:`~backends.workloads.selection.PromptDeal`), the liveness check
after it, and the ``on_level`` callback, which may stop the loop (a hard SLO already violated,
a configuration clearly worse than the best so far: :class:`StopLevels`).

**The engine's time.** The sim engine runs ``time-scale`` times faster than the hardware it
models; the load generator is told the scale and computes every metric and SLO verdict in the
engine's time (:mod:`backends.loadgen.aggregate`), with the wall-clock numbers kept beside them
(``LoadPointRecord.wall_metrics``). Request rates in the spec are in the engine's time too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from backends.deploy.base import DeployBackend, DeployCancelled, EngineFailure
from backends.deploy.leases import GpuLeaser, InsufficientGpusError
from backends.deploy.procs import free_port
from backends.engines import get_engine
from backends.loadgen import LoadOptions, TargetConfig, level_verdict, run_load_point, run_sync
from backends.loadgen.capacity import Bisection, FixedLevels, LevelPlan
from backends.workloads import Workload
from backends.workloads.selection import PromptDeal
from core.clock import now
from core.faults import crash_point
from reconciler.artifacts import image_for
from reconciler.study import Measurement
from specs.errors import UserError
from specs.model import TuningSpec
from specs.paths import UnsafePath, inside_roots
from specs.records import FailureRecord, GpuRecord, LoadPointRecord
from specs.space import Config

log = logging.getLogger(__name__)

#: a load point where more than this fraction of requests failed counts as failed
ERROR_RATE_LIMIT = 0.5

Progress = Callable[[str, dict[str, Any]], None]


def _point(p: LoadPointRecord, notes: Sequence[str] = ()) -> LoadPointRecord:
    return p.model_copy(update={"notes": [*p.notes, *notes]})


def combine_repeats(points: Sequence[LoadPointRecord]) -> LoadPointRecord:
    """Several measurements of one load point as one: every metric the median of the repeats,
    ``spread`` its min/median/max, errors summed. The median keeps a single disturbed
    repeat from moving the result; the spread shows how much the repeats disagreed."""
    if len(points) == 1:
        return points[0]
    first = points[0]
    metrics: dict[str, float | None] = {}
    spread: dict[str, dict[str, float]] = {}
    for name in first.metrics:
        values = sorted(v for p in points if (v := p.metrics.get(name)) is not None)
        if not values:
            metrics[name] = None
            continue
        mid = statistics.median(values)
        metrics[name] = mid
        spread[name] = {"min": values[0], "median": mid, "max": values[-1]}
    errors: dict[str, int] = {}
    for p in points:
        for k, v in p.errors.items():
            errors[k] = errors.get(k, 0) + v
    notes = list(dict.fromkeys(n for p in points for n in p.notes))
    notes.append(f"{len(points)} repeats: each metric is their median (spread: min/median/max)")
    wall: list[dict[str, float | None]] = [w for p in points if (w := p.wall_metrics)]
    return LoadPointRecord(
        load_kind=first.load_kind,
        load_value=first.load_value,
        metrics=metrics,
        source=first.source,
        notes=notes,
        errors=dict(sorted(errors.items())),
        wall_metrics={
            k: statistics.median(vs) if (vs := [v for w in wall if (v := w.get(k)) is not None]) else None
            for k in (wall[0] if wall else {})
        },
        spread=spread,
        measured={**first.measured, "repeats": len(points)},
        extra=dict(first.extra),
    )


@dataclass(frozen=True)
class LevelOutcome:
    """What the ``on_level`` callback sees after each load level of an experiment."""

    config: Config
    #: 0 for the first level measured in this experiment
    index: int
    #: the level just measured (metrics in the engine's time, SLO verdicts not yet attached)
    point: LoadPointRecord
    #: it meets every hard SLO (:func:`backends.loadgen.capacity.level_verdict`) and why not
    passed: bool
    reasons: tuple[str, ...]
    #: every level measured so far in this experiment, this one last
    points: tuple[LoadPointRecord, ...]
    #: the fixed levels still to measure (empty in a capacity search, whose next level depends
    #: on this one)
    remaining: tuple[float, ...] = ()


@dataclass(frozen=True)
class StopLevels:
    """``on_level``'s answer to end the experiment's level loop now: the levels measured so far
    are kept; with ``prune`` the experiment is recorded as PRUNED (clearly worse than what the
    study already has) instead of COMPLETE."""

    reason: str
    prune: bool = False


#: called after every load level; return :class:`StopLevels` to measure no further level
LevelHook = Callable[[LevelOutcome], StopLevels | None]


def with_local_model(spec: TuningSpec, base_dir: Path | None) -> TuningSpec:
    """The spec engines are launched with: a relative ``model.id`` that names a file or folder
    under ``base_dir`` (where the spec's relative paths start) made absolute.

    Engines run in their own working directory (the backend's, or the daemon's), where a path
    relative to the spec repository, such as a committed GGUF file, would not be found. An id
    that is no path there (a Hugging Face id) is left as it is. Only the launch sees the result:
    the study, its generation and ``best/`` keep the spec as written, so they do not depend on
    where the repository is checked out.
    """
    model = spec.spec.model
    if base_dir is None or Path(model.id).is_absolute() or not os.path.lexists(base_dir / model.id):
        return spec
    try:
        # a committed symlink must not lead the engine out of the repository (docs/security.md);
        # absolute ids were checked against the operator's dataRoots at validation
        resolved = inside_roots(model.id, [base_dir], base=base_dir)
    except UnsafePath:
        raise UserError(
            f"model.id {model.id!r} resolves outside the repository",
            hint="commit the model files themselves, or give an absolute path under dataRoots",
        ) from None
    local = model.model_copy(update={"id": str(resolved)})
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"model": local})})


def explain(message: str, log_tail: str, detail: str | None = None) -> str:
    """The failure message plus the engine's own words: ``detail`` when the engine mapping read
    them from the log (:meth:`~backends.engines.base.Engine.failure_detail`), else the log's last
    error-looking line, when it has one."""
    if detail:
        return f"{message}: {detail[:300]}"
    for line in reversed(log_tail.splitlines()):
        text = line.strip()
        if (
            text
            and not text.startswith("[autotuner")
            and any(w in text.lower() for w in ("error", "exception", "out of memory", "killed", "failed"))
        ):
            return f"{message}: {text[:300]}"
    return message


class ExperimentRunner:
    """The study's executor for real engines (see :class:`reconciler.study.Executor`)."""

    def __init__(
        self,
        spec: TuningSpec,
        *,
        backend: DeployBackend,
        leaser: GpuLeaser,
        workload: Workload,
        logs_dir: Path,
        host: str = "127.0.0.1",
        progress: Progress | None = None,
        base_dir: Path | None = None,
        on_level: LevelHook | None = None,
    ) -> None:
        self.spec = spec
        self.body = spec.spec
        self.launch_spec = with_local_model(spec, base_dir)
        self.engine = get_engine(self.body.engine.name, self.body.engine.variant)
        self.backend = backend
        self.leaser = leaser
        self.workload = workload
        self.logs_dir = logs_dir
        self.host = host
        self.progress = progress or (lambda e, i: None)
        self._counter = itertools.count(1)
        self.time_scale = 1.0
        if self.body.engine.name == "sim":
            scale = self.body.engine.args.get("time-scale", self.body.engine.args.get("time_scale", 1.0))
            self.time_scale = (
                float(scale) if isinstance(scale, int | float) and not isinstance(scale, bool) else 1.0
            )
        self._counter_lock = threading.Lock()
        #: see :data:`LevelHook`; the study may set it after construction
        self.on_level = on_level

    # the engine runs on real devices unless it is the simulator, which only pretends to have GPUs
    def devices_for(self, gpus: int) -> int:
        return 0 if self.body.engine.name == "sim" else gpus

    def can_run(self, config: Config) -> bool:
        """False for a configuration the engine would refuse (the study skips it unmeasured)."""
        return not self.engine.config_problems(self.spec, config) and not self.engine.startup_problems(
            self.spec, config
        )

    def engine_flags(self, config: Config) -> dict[str, Any]:
        return dict(self.engine.resolve(self.spec, config))

    def _name(self, config: Config) -> str:
        with self._counter_lock:
            n = next(self._counter)
        digest = hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:6]
        return f"{self.spec.name[:40].rstrip('-')}-{digest}-{n}"

    def __call__(self, config: Config, *, baseline: bool, cancel: threading.Event) -> Measurement:
        started = now()
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        gpus = self.engine.gpus_for(self.spec, config)
        flags = self.engine_flags(config)
        simulated = self.body.engine.name == "sim"
        missing = self.engine.executable_problem() if self.backend.kind == "local" else None
        if missing is not None:
            return Measurement(
                state="FAILED",
                failure=FailureRecord(kind="executable_missing", reason=missing),
                engine_flags=flags,
                started_at=started,
                finished_at=now(),
            )
        # a backend whose cluster schedules GPUs (kubernetes) takes no lease of ours
        cluster_gpus = bool(getattr(self.backend, "schedules_gpus", False))
        try:
            lease = self.leaser.acquire(0 if cluster_gpus else self.devices_for(gpus), cancel=cancel)
        except InsufficientGpusError as exc:
            return Measurement(
                state="FAILED",
                failure=FailureRecord(kind="gpus_unavailable", reason=str(exc)),
                engine_flags=flags,
                started_at=started,
                finished_at=now(),
            )
        if lease is None:
            return Measurement(state="FAILED", interrupted=True, started_at=started)
        timings["lease_wait_s"] = round(time.monotonic() - t0, 3)
        infos = [g for g in self.leaser.gpus if g.index in lease.ids]
        if simulated:
            sim_gpu = str(self.body.engine.args.get("gpu", "h100"))
            gpu = GpuRecord(model=f"{sim_gpu.upper()} (simulated)", count=gpus, ids=[])
        else:
            gpu = GpuRecord(
                model=infos[0].name if infos else None,
                count=gpus,
                ids=list(lease.ids),
                driver=infos[0].driver if infos else None,
                memory_mib=infos[0].memory_total_mib if infos else None,
            )
        # the backend says where the engine listens: loopback for a process, every address of a
        # container's or pod's own network namespace
        plan = self.engine.launch(
            self.launch_spec, config, host=self.backend.bind_host, port=free_port(self.host)
        )
        plan = dataclasses.replace(
            plan, gpus=gpus if cluster_gpus else len(lease.ids), image=image_for(self.spec, plan)
        )
        name = self._name(config)
        m = Measurement(
            state="COMPLETE",
            command=list(plan.argv),
            engine_flags=flags,
            gpu=gpu,
            simulated=simulated,
            image=plan.image if self.backend.kind != "local" else None,
            started_at=started,
            timings=timings,
        )
        deployment = None
        try:
            t = time.monotonic()
            deployment = self.backend.deploy(
                plan,
                name=name,
                gpu_ids=list(lease.ids),
                log_path=self.logs_dir / f"{name}.log",
                labels={
                    "autotuner.spec": self.spec.name,
                    "autotuner.generation": self.spec.generation(),
                    "autotuner.experiment": name,
                },
            )
            timings["deploy_s"] = round(time.monotonic() - t, 3)
            t = time.monotonic()
            self.progress("deploying", {"name": name, "config": config})
            crash_point("engine_started")
            deployment.wait_ready(
                min(self.body.backend.startup_timeout, self.body.search.experiment_timeout), cancel=cancel
            )
            timings["ready_s"] = round(time.monotonic() - t, 3)
            t = time.monotonic()
            deadline = t0 + self.body.search.experiment_timeout
            self._benchmark(
                m,
                config,
                deployment.base_url,
                plan.served_model or None,
                plan.reset_cache_path,
                max(1, gpus),
                deployment,
                cancel,
                deadline,
            )
            timings["benchmark_s"] = round(time.monotonic() - t, 3)
        except DeployCancelled:
            m.interrupted = True
        except EngineFailure as exc:
            m.state = "FAILED"
            kind: str = exc.kind
            if kind == "startup_crash" and self.engine.missing_module(exc.log_tail):
                kind = "executable_missing"  # the engine's own package is not installed
            m.failure = FailureRecord(
                kind=kind,
                reason=explain(exc.message, exc.log_tail, self.engine.failure_detail(exc.log_tail)),
                log_tail=exc.log_tail,
                exit_code=exc.exit_code,
            )
        finally:
            t = time.monotonic()
            if deployment is not None:
                deployment.teardown()
            lease.release()
            timings["teardown_s"] = round(time.monotonic() - t, 3)
            timings["total_s"] = round(time.monotonic() - t0, 3)
            m.finished_at = now()
        if cancel.is_set() and m.state == "COMPLETE" and m.failure is None:
            m.interrupted = True
        return m

    def _benchmark(
        self,
        m: Measurement,
        config: Config,
        base_url: str,
        model: str | None,
        reset_path: str | None,
        gpus: int,
        deployment: Any,
        cancel: threading.Event,
        deadline: float,
    ) -> None:
        wl = self.body.workload
        target = TargetConfig(base_url=base_url, model=model, api=wl.api, ignore_eos=wl.ignore_eos)
        seed = self.body.workload.seed
        deal = PromptDeal(self.workload.requests, seed=seed)
        slo = self.body.slo

        def remaining() -> float | None:
            """This level's share of the time budget, computed afresh before every level."""
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineFailure(
                    "timeout",
                    f"the experiment ran past experimentTimeout ({self.body.search.experiment_timeout:g}s)",
                )
            cap = wl.max_duration_per_level
            return min(left, cap) if cap is not None else left

        def reset_cache() -> None:
            if reset_path:
                _post(base_url + reset_path)

        options = LoadOptions(
            burstiness=wl.load.burstiness,
            seed=seed,
            gpus=gpus,
            slo=slo,
            timeout_s=wl.request_timeout,
            time_scale=self.time_scale,
            workers=wl.workers,
        )
        if wl.warmup_requests:
            warmup, _ = deal.take(wl.warmup_requests)
            warm = dataclasses.replace(options, slo={}, workers=1, max_duration_s=remaining())
            run_sync(run_load_point(target, warmup, concurrency=min(4, len(warmup)), options=warm))
        load = wl.load
        plan: LevelPlan
        if load.capacity is not None:
            cap = load.capacity
            kind: Literal["concurrency", "request_rate"] = (
                "concurrency" if cap.by == "concurrency" else "request_rate"
            )
            plan = Bisection(
                by=kind, low=cap.low, high=cap.high, max_steps=cap.max_steps, tolerance=cap.tolerance
            )
        elif load.concurrency is not None:
            kind = "concurrency"
            plan = FixedLevels([float(c) for c in load.concurrency])
        else:
            kind = "request_rate"
            plan = FixedLevels([float(r) for r in (load.request_rate or [])])

        points: list[LoadPointRecord] = []
        while (value := plan.next_level()) is not None:
            if cancel.is_set():
                raise DeployCancelled("cancelled between load points")
            self.progress("load_point", {"kind": kind, "value": value})
            repeats: list[LoadPointRecord] = []
            notes: list[str] = []
            for _ in range(wl.repeats):
                # the warm-up's and earlier levels' prompts are out of the cache and out of the list
                reset_cache()
                requests, note = deal.take(wl.requests_per_level)
                if note:
                    notes.append(note)
                repeats.append(
                    run_sync(
                        run_load_point(
                            target,
                            requests,
                            concurrency=int(value) if kind == "concurrency" else None,
                            request_rate=value if kind == "request_rate" else None,
                            options=dataclasses.replace(options, max_duration_s=remaining()),
                        )
                    )
                )
                if cancel.is_set():
                    raise DeployCancelled("cancelled during a load point")
            point = combine_repeats(repeats)
            points.append(point)
            crash_point("load_point_done")
            record = _point(point, list(dict.fromkeys(notes)))
            m.load_points.append(record)
            if not deployment.alive():
                raise deployment.failure("crashed", f"the engine died during the load point {kind}={value:g}")
            passed, reasons = level_verdict(point, slo)
            plan.record(point, passed, reasons)
            if self.on_level is not None:
                decision = self.on_level(
                    LevelOutcome(
                        config=config,
                        index=len(points) - 1,
                        point=record,
                        passed=passed,
                        reasons=tuple(reasons),
                        points=tuple(m.load_points),
                        remaining=plan.remaining() if isinstance(plan, FixedLevels) else (),
                    )
                )
                if decision is not None:
                    record.notes.append(f"no further load levels: {decision.reason}")
                    if decision.prune:
                        m.state = "PRUNED"
                        m.failure = FailureRecord(kind="pruned", reason=decision.reason)
                    break
        if isinstance(plan, Bisection) and plan.result.summary:
            m.load_points[-1].notes.append(f"capacity search: {plan.result.summary}")
        if not deployment.alive():
            raise deployment.failure("crashed", "the engine died during the benchmark")
        rates = [p.metrics.get("error_rate") for p in points]
        if points and all(r is not None and r > ERROR_RATE_LIMIT for r in rates):
            kinds: dict[str, int] = {}
            for p in points:
                for k, v in p.errors.items():
                    kinds[k] = kinds.get(k, 0) + v
            top = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:3])
            raise deployment.failure(
                "benchmark_errors",
                f"more than {ERROR_RATE_LIMIT:.0%} of requests failed at every load level ({top})",
            )


def _post(url: str, timeout: float = 10.0) -> None:
    """Best-effort POST (prefix-cache reset); an engine without the endpoint is not an error."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as exc:
        log.debug("cache reset %s failed: %s", url, exc)
