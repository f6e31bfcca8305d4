"""Run one configuration end to end: lease GPUs, deploy, wait ready, warm up, measure every load
point, tear down — always — and say what happened as a :class:`~reconciler.study.Measurement`.

Engine trouble never raises out of here: it becomes a FAILED measurement with a classified
reason and the engine's log tail, so the study goes on. A shutdown (``cancel``) becomes an
*interrupted* measurement, which the study re-queues instead of recording.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from backends.deploy.base import DeployBackend, DeployCancelled, EngineFailure
from backends.deploy.procs import free_port
from backends.engines import get_engine
from backends.faults import crash_point
from backends.loadgen import TargetConfig, find_capacity, run_load_point, run_sync
from backends.measure import LoadPointResult
from backends.workloads import Workload
from reconciler.leases import GpuLeaser, InsufficientGpusError
from reconciler.study import LevelGate, Measurement, now
from specs.model import TuningSpec
from specs.records import FailureRecord, GpuRecord, LoadPointRecord
from specs.space import Config

log = logging.getLogger(__name__)

#: a load point where more than this fraction of requests failed counts as failed
ERROR_RATE_LIMIT = 0.5

Progress = Callable[[str, dict[str, Any]], None]


def _point(p: LoadPointResult, time_scale: float = 1.0) -> LoadPointRecord:
    metrics = dict(p.metrics)
    notes = list(p.notes)
    load_value = p.load_value
    if time_scale != 1.0:
        metrics = rescale(metrics, time_scale)
        if p.load_kind == "request_rate":
            load_value = p.load_value / time_scale
        notes.append(
            f"sim engine ran {time_scale:g}x faster than real time; times and rates are rescaled "
            "to simulated time"
        )
    return LoadPointRecord(
        load_kind=p.load_kind,
        load_value=load_value,
        metrics=metrics,
        source=p.source,
        notes=notes,
        errors=dict(p.errors),
    )


def rescale(metrics: dict[str, float | None], time_scale: float) -> dict[str, float | None]:
    """Wall-clock measurements of a time-scaled sim engine, back in simulated time: durations
    grow by the scale, rates shrink by it; counts and fractions stay."""
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        if value is None:
            out[name] = None
        elif name.endswith("_ms") or name == "duration_s":
            out[name] = value * time_scale
        elif "throughput" in name or name.startswith("goodput"):
            out[name] = value / time_scale
        else:
            out[name] = value
    return out


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
    if base_dir is None or Path(model.id).is_absolute() or not (base_dir / model.id).exists():
        return spec
    local = model.model_copy(update={"id": str((base_dir / model.id).resolve())})
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
        #: the study's per-level decision (stop the levels, prune); set by whoever builds the study
        self.level_gate: LevelGate | None = None

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

    def _requests(self, n: int) -> list[Any]:
        reqs = self.workload.requests
        return [reqs[i % len(reqs)] for i in range(n)]

    def __call__(self, config: Config, *, baseline: bool, cancel: threading.Event) -> Measurement:
        started = now()
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        gpus = self.engine.gpus_for(self.spec, config)
        flags = self.engine_flags(config)
        simulated = self.body.engine.name == "sim"
        try:
            lease = self.leaser.acquire(self.devices_for(gpus), cancel=cancel)
        except InsufficientGpusError as exc:
            return Measurement(
                state="FAILED",
                failure=FailureRecord(kind="invalid_config", reason=str(exc)),
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
        plan = self.engine.launch(self.launch_spec, config, host=self.host, port=free_port(self.host))
        plan = dataclasses.replace(plan, gpus=len(lease.ids))
        name = self._name(config)
        m = Measurement(
            state="COMPLETE",
            command=list(plan.argv),
            engine_flags=flags,
            gpu=gpu,
            simulated=simulated,
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
                labels={"autotuner.spec": self.spec.name, "autotuner.generation": self.spec.generation()},
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
                deployment.base_url,
                plan.served_model or None,
                plan.reset_cache_path,
                max(1, gpus),
                deployment,
                cancel,
                deadline,
                config=config,
            )
            timings["benchmark_s"] = round(time.monotonic() - t, 3)
        except DeployCancelled:
            m.interrupted = True
        except EngineFailure as exc:
            m.state = "FAILED"
            m.failure = FailureRecord(
                kind=exc.kind,
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
        base_url: str,
        model: str | None,
        reset_path: str | None,
        gpus: int,
        deployment: Any,
        cancel: threading.Event,
        deadline: float,
        config: Config | None = None,
    ) -> None:
        wl = self.body.workload
        target = TargetConfig(base_url=base_url, model=model, api=wl.api, ignore_eos=wl.ignore_eos)
        requests = self._requests(wl.requests_per_level)
        warmup_requests = self._requests(wl.warmup_requests)
        seed = self.body.workload.seed

        def remaining() -> float | None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineFailure(
                    "timeout",
                    f"the experiment ran past experimentTimeout ({self.body.search.experiment_timeout:g}s)",
                )
            cap = wl.max_duration_per_level
            return min(left, cap) if cap is not None else left

        if warmup_requests:
            run_sync(
                run_load_point(
                    target,
                    warmup_requests,
                    concurrency=min(4, len(warmup_requests)),
                    seed=seed,
                    gpus=gpus,
                    timeout_s=wl.request_timeout,
                    max_duration_s=remaining(),
                )
            )
        load = wl.load
        points: list[LoadPointResult] = []
        if load.capacity is not None:
            cap = load.capacity
            result = run_sync(
                find_capacity(
                    target,
                    requests,
                    by=cap.by,
                    low=cap.low,
                    high=cap.high,
                    max_steps=cap.max_steps,
                    tolerance=cap.tolerance,
                    slo=self.body.slo,
                    burstiness=load.burstiness,
                    seed=seed,
                    gpus=gpus,
                    timeout_s=wl.request_timeout,
                    max_duration_s=remaining(),
                )
            )
            points = list(result.points)
        else:
            levels: Sequence[tuple[str, float]] = (
                [("concurrency", float(c)) for c in load.concurrency]
                if load.concurrency is not None
                else [("request_rate", float(r)) for r in (load.request_rate or [])]
            )
            for i, (kind, value) in enumerate(levels):
                if cancel.is_set():
                    raise DeployCancelled("cancelled between load points")
                if reset_path:
                    _post(base_url + reset_path)
                self.progress("load_point", {"kind": kind, "value": value})
                point = run_sync(
                    run_load_point(
                        target,
                        requests,
                        concurrency=int(value) if kind == "concurrency" else None,
                        request_rate=value if kind == "request_rate" else None,
                        burstiness=load.burstiness,
                        seed=seed,
                        gpus=gpus,
                        slo=self.body.slo,
                        timeout_s=wl.request_timeout,
                        max_duration_s=remaining(),
                    )
                )
                points.append(point)
                crash_point("load_point_done")
                m.load_points.append(_point(point, self.time_scale))
                if not deployment.alive():
                    raise deployment.failure(
                        "crashed", f"the engine died during the load point {kind}={value:g}"
                    )
                verdict = (
                    self.level_gate(config or {}, m.load_points, [v for _, v in levels[i + 1 :]])
                    if self.level_gate is not None
                    else None
                )
                if verdict is not None:
                    if verdict.action == "prune":
                        m.state = "PRUNED"
                        m.failure = FailureRecord(kind="pruned", reason=verdict.reason)
                    else:
                        m.load_points[-1].notes.append(verdict.reason)
                    break
        if load.capacity is not None:
            m.load_points = [_point(p, self.time_scale) for p in points]
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
