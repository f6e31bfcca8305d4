"""A process's working context for running studies: the GPU inventory and leases, the local
deploy backend, orphan cleanup at start and teardown at the end. ``run``, ``demo`` and the daemon
each open one session, so that two studies in one process share one set of GPU leases."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from backends.deploy.base import DeployBackend
from backends.deploy.gpus import GpuInfo, discover_gpus
from backends.deploy.leases import GpuLeaser
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, make_backend, run_spec, write_status
from reconciler.study import StudyOutcome
from reconciler.study.contract import Progress
from specs.errors import UserError
from specs.loader import LoadedSpec
from specs.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class Session:
    state_dir: Path
    gpus: list[GpuInfo]
    leaser: GpuLeaser
    backends: dict[str, DeployBackend] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the operator's policy (docs/security.md); every study of the session runs under it
    policy: Policy = field(default_factory=Policy)

    def backend(self, loaded: LoadedSpec) -> DeployBackend:
        # one backend per distinct backend block: a container's settings (network, shm, volumes)
        # belong to the backend, and specs that agree on them share one; on Kubernetes one per
        # spec and settings (namespace, scheduling options and the owner object are the spec's)
        kind = loaded.spec.spec.backend.model_dump_json()
        if loaded.spec.spec.backend.kind == "kubernetes":
            kind = f"kubernetes:{loaded.spec.name}:{kind}"
        with self.lock:
            if kind not in self.backends:
                backend = make_backend(loaded.spec, self.state_dir, self.policy)
                removed = backend.cleanup_orphans()
                if removed:
                    log.warning(
                        "stopped %d orphaned engine(s) left by an earlier run: %s",
                        len(removed),
                        ", ".join(removed),
                    )
                self.backends[kind] = backend
            return self.backends[kind]

    def run(
        self,
        loaded: LoadedSpec,
        results: Path,
        *,
        base_dir: Path,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        site_dir: Path | None = None,
        revision: str | None = None,
        spec_file: str | None = None,
    ) -> StudyOutcome | None:
        ctx = RunContext(
            results_root=results,
            state_dir=self.state_dir,
            base_dir=base_dir,
            leaser=self.leaser,
            progress=progress,
            stop=stop,
            revision=revision,
            spec_file=spec_file,
            policy=self.policy,
        )
        try:
            ctx.backend = self.backend(loaded)
        except UserError as exc:
            # record why nothing can run (engine or backend missing) before telling the caller
            store = ResultsStore(results, loaded.name)
            store.ensure()
            write_status(loaded.spec, store, ctx, "stalled", str(exc), reason="InvalidInput")
            raise
        if site_dir is not None:
            from reconciler.site import rebuild_site

            def rebuild(_: str) -> None:
                rebuild_site(results, site_dir)

            ctx.on_change = rebuild
        outcome = run_spec(loaded, ctx)
        if site_dir is not None:
            from reconciler.site import rebuild_site

            rebuild_site(results, site_dir)
        return outcome


@contextmanager
def open_session(
    state_dir: Path, *, fake_gpus: str | None = None, policy: Policy | None = None
) -> Iterator[Session]:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    gpus = discover_gpus(fake_gpus)
    leaser = GpuLeaser(gpus, lock_dir=state_dir / "gpu-locks")
    session = Session(state_dir=state_dir, gpus=gpus, leaser=leaser, policy=policy or Policy())
    try:
        yield session
    finally:
        # deployments are torn down by their experiments; this catches anything left behind
        for backend in session.backends.values():
            teardown_all = getattr(backend, "teardown_all", None)
            try:
                if teardown_all is not None:
                    teardown_all()
            except Exception:  # pragma: no cover - best effort at exit
                log.exception("teardown at exit failed")
