"""Run one configuration end to end: lease GPUs, deploy, wait ready, warm up, measure every load
point, tear down — always — and say what happened as a
:class:`~reconciler.study.contract.Measurement`.

Engine trouble never raises out of here: it becomes a FAILED measurement with a classified
reason and the engine's log tail, so the study goes on. A shutdown (``cancel``) becomes an
*interrupted* measurement, which the study re-queues instead of recording.

Failures on the host's side are told apart from the configuration's
(:func:`specs.records.failure_side`): an engine whose executable is missing is found before
launch (``executable_missing``), too few GPUs is ``gpus_unavailable``; neither is reused by a
later study, so installing the engine or adding GPUs re-measures the configuration.

The load levels themselves (warm-up, levels, repeats, the level hook) are measured by
:class:`reconciler.levels.LevelRun`; this module owns the engine's lifecycle around them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from backends.deploy.base import DeployBackend, DeployCancelled, EngineFailure
from backends.deploy.leases import GpuLeaser, InsufficientGpusError
from backends.deploy.procs import free_port
from backends.engines import get_engine
from backends.workloads import Workload
from core.clock import now
from core.faults import crash_point
from reconciler.artifacts import image_for
from reconciler.levels import LevelHook, LevelRun
from reconciler.study.contract import Measurement, Progress
from specs.errors import UnsafePath, UserError
from specs.model import TuningSpec
from specs.paths import inside_roots
from specs.records import FailureRecord, GpuRecord
from specs.space import Config

log = logging.getLogger(__name__)


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
    """The study's executor for real engines (see :class:`reconciler.study.contract.Executor`)."""

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
            LevelRun(
                body=self.body,
                requests=self.workload.requests,
                config=config,
                base_url=deployment.base_url,
                model=plan.served_model or None,
                deployment=deployment,
                cancel=cancel,
                deadline=t0 + self.body.search.experiment_timeout,
                gpus=max(1, gpus),
                time_scale=self.time_scale,
                reset_path=plan.reset_cache_path,
                progress=self.progress,
                on_level=self.on_level,
            ).run(m)
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
