"""Deploy backends by kind, beside the engine registry: ``get_backend("docker", ...)``.

Why a table and not an if-chain in the reconciler: each backend states once what it needs (an
optional extra whose module must import) and how it is made; the error for a kind that cannot
be made is then the same for every backend, and a new backend registers in one line. Factories
import their module lazily, so ``autotuner`` starts without the ``docker`` or ``kubernetes``
extras installed and a spec that does not select them never needs them.

A factory gets the :class:`BackendRequest` (the spec, the daemon's state folder and the
operator's settings) and returns a :class:`~backends.deploy.base.DeployBackend`; it raises
:class:`~specs.errors.UserError` for what stops the spec from running here (an engine not
installed on this host, a spec volume outside the operator's roots).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends.deploy.base import DeployBackend
from backends.deploy.container import Mount
from specs.errors import MissingExtraError, UserError
from specs.model import TuningSpec
from specs.policy import Policy
from specs.suggest import did_you_mean

__all__ = ["BackendRequest", "BackendType", "backend_kinds", "get_backend", "register_backend"]


@dataclass(frozen=True)
class BackendRequest:
    """What a backend factory may use."""

    spec: TuningSpec
    state_dir: Path
    #: host folders a spec's volumes and local model paths may come from (operator policy)
    allowed_volume_roots: tuple[Path, ...] = ()
    #: the operator's mounts for every container (trusted: daemon settings, not a spec)
    mounts: tuple[Mount, ...] = ()
    #: the operator policy (docs/security.md)
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class BackendType:
    kind: str
    factory: Callable[[BackendRequest], DeployBackend]
    #: ``pip install autotuner[<extra>]`` provides :attr:`module`
    extra: str | None = None
    module: str | None = None


_REGISTRY: dict[str, BackendType] = {}


def register_backend(backend: BackendType) -> None:
    """Add (or replace) a backend kind."""
    _REGISTRY[backend.kind] = backend


def backend_kinds() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(kind: str, request: BackendRequest) -> DeployBackend:
    """The backend for ``kind``; :class:`UserError` when it is unknown or its extra is missing."""
    entry = _REGISTRY.get(kind)
    if entry is None:
        raise UserError(
            f"there is no {kind!r} deploy backend in this version of autotuner"
            f"{did_you_mean(kind, list(_REGISTRY))}",
            hint=f"use one of {', '.join(backend_kinds())} in spec.backend.kind (see docs/backends.md)",
        )
    if entry.module is not None and importlib.util.find_spec(entry.module) is None:
        raise MissingExtraError(entry.module, entry.extra or entry.module)
    return entry.factory(request)


def _local(request: BackendRequest) -> DeployBackend:
    from backends.deploy.local import LocalBackend
    from backends.engines import get_engine

    engine = request.spec.spec.engine
    problem = get_engine(engine.name, engine.variant).local_problem()
    if problem is not None:
        raise problem
    return LocalBackend(request.state_dir, policy=request.policy)


def _docker(request: BackendRequest) -> DeployBackend:
    from backends.deploy.docker import DockerBackend
    from specs.model import DockerBackend as DockerSettings

    settings = request.spec.spec.backend
    assert isinstance(settings, DockerSettings)
    return DockerBackend(
        request.state_dir,
        settings=settings,
        allowed_volume_roots=request.allowed_volume_roots,
        mounts=request.mounts,
        policy=request.policy,
    )


def _kubernetes(request: BackendRequest) -> DeployBackend:
    import os

    from backends.deploy.kubernetes import KubernetesBackend
    from specs.model import KubernetesBackend as KubernetesSettings

    spec = request.spec
    settings = spec.spec.backend
    assert isinstance(settings, KubernetesSettings)
    host_paths = os.environ.get("AUTOTUNER_KUBERNETES_HOST_PATHS", "")
    return KubernetesBackend(
        settings,
        spec_name=spec.name,
        state_dir=request.state_dir,
        kubeconfig=os.environ.get("KUBECONFIG") or None,
        context=os.environ.get("AUTOTUNER_KUBE_CONTEXT") or None,
        allow_host_paths=[p for p in host_paths.split(":") if p],
        # a pod outlives no experiment by much, even when its daemon never comes back
        active_deadline_s=spec.spec.search.experiment_timeout + 600,
        policy=request.policy,
    )


register_backend(BackendType("local", _local))
register_backend(BackendType("docker", _docker, extra="docker", module="docker"))
register_backend(BackendType("kubernetes", _kubernetes, extra="kubernetes", module="kubernetes"))
