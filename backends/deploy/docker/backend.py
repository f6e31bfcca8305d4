"""The docker backend object: settings, the client, what may be mounted, and the container config.

What goes into a container is decided by :func:`backends.deploy.container.container_config`
(which also writes ``best/docker-run.sh``, so the artifact is the invocation that was
measured); this module adds the operator's side: which host folders a spec may mount
(:func:`check_volumes`, :func:`local_paths`), the operator's own mounts and the Hugging Face
cache, and the ownership labels (:mod:`.ownership`).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.deploy.container import ContainerConfig, Mount, container_config
from backends.deploy.docker.deployment import DockerDeployment
from backends.deploy.docker.ownership import (
    LABEL_DEPLOYMENT,
    LABEL_HOST,
    LABEL_MANAGED,
    LABEL_OWNER,
    container_name,
    owner_mark,
    remove_orphans,
)
from backends.deploy.shared import DEFAULT_TAIL_LINES, BackendCore, DeployRequest
from backends.engines.base import LaunchPlan
from specs.errors import MissingExtraError, UserError
from specs.model import DockerBackend as DockerSettings
from specs.policy import Policy

__all__ = ["DockerBackend", "check_volumes", "local_paths"]


def _sdk() -> Any:
    try:
        import docker
    except ImportError:
        raise MissingExtraError("docker", "docker") from None
    return docker


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def check_volumes(settings: DockerSettings, roots: Sequence[Path]) -> None:
    """Refuse spec volumes whose host path is not under an operator-allowed root.

    The spec repository is untrusted: a volume is a read of the host's files (``/etc``, the
    daemon's state) into a container whose log tail is committed. Paths are compared after
    resolving symlinks, so a link inside an allowed root cannot point outside it.
    """
    allowed = [Path(os.path.realpath(r)) for r in roots]
    for i, text in enumerate(settings.volumes):
        source = Path(os.path.realpath(text.split(":")[0]))
        where = f"spec.backend.volumes[{i}]"
        if not _under(source, allowed):
            shown = ", ".join(str(r) for r in allowed) or "none"
            raise UserError(
                f"{where}: {text!r} mounts a host folder outside the roots the operator allows ({shown})",
                hint="ask the operator to allow its root (volumeRoots in the policy file, "
                "docs/security.md), or drop the volume; the Hugging Face cache is mounted without one",
            )
        if not source.exists():
            raise UserError(f"{where}: {text!r}: the host path {source} does not exist")


def local_paths(argv: Sequence[str], roots: Sequence[Path]) -> list[str]:
    """Absolute paths in ``argv`` that exist under an allowed root (local models, a GGUF file),
    to be mounted read-only at the same path so that the command line stays as it is."""
    allowed = [Path(os.path.realpath(r)) for r in roots]
    out = []
    for arg in argv:
        if not arg.startswith("/"):
            continue
        real = Path(os.path.realpath(arg))
        if real.exists() and _under(real, allowed):
            out.append(arg)
    return out


class DockerBackend(BackendCore[DockerDeployment]):
    """Deploys engines as containers. Thread safe; one instance per spec's docker settings.

    ``settings`` are the spec's ``backend`` block (network, ipc and shm, memory limit, volumes);
    ``allowed_volume_roots`` are the host folders spec volumes and local model paths may come
    from (the operator's policy; none by default); ``mounts`` are the operator's own mounts,
    added to every container as given (trusted: they come from the daemon's settings, not from a
    spec); ``hf_cache`` the host's Hugging Face cache folder (default ``$HF_HOME`` or
    ``~/.cache/huggingface`` of the daemon, mounted when it exists); ``pull_timeout_s`` bounds
    getting the image and starting the container, which the readiness timeout does not count.
    ``client`` is a ``docker.DockerClient``; by default one is made from ``DOCKER_HOST``
    (``base_url`` to give another socket). ``environ`` is where ``fromEnv`` references are read
    (default: this process's environment; nothing else of it reaches a container).
    """

    kind = "docker"

    def __init__(
        self,
        state_dir: Path,
        *,
        settings: DockerSettings | None = None,
        client: Any = None,
        base_url: str | None = None,
        allowed_volume_roots: Sequence[Path] = (),
        mounts: Sequence[Mount] = (),
        hf_cache: Path | bool | None = True,
        grace_s: float = 10.0,
        poll_interval_s: float = 0.25,
        probe_timeout_s: float = 2.0,
        tail_lines: int = DEFAULT_TAIL_LINES,
        pull_timeout_s: float = 3600.0,
        environ: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        policy: Policy | None = None,
    ) -> None:
        self._docker = _sdk()
        self.policy = policy
        self.pull_timeout_s = pull_timeout_s
        self.state_dir = Path(state_dir)
        self.settings = settings or DockerSettings(kind="docker")
        self.allowed_volume_roots = tuple(Path(r) for r in allowed_volume_roots)
        check_volumes(self.settings, self.allowed_volume_roots)
        self.mounts = tuple(mounts)
        if hf_cache is True:
            home = os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface")
            hf_cache = Path(home)
        self.hf_cache: Path | None = hf_cache if isinstance(hf_cache, Path) else None
        self.grace_s = grace_s
        self.poll_interval_s = poll_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.tail_lines = tail_lines
        self.environ = environ
        self.host = host
        self.hostname = socket.gethostname()
        self.owner = owner_mark()
        self._client_obj = client
        self._base_url = base_url
        self._init_registry()

    @property
    def bind_host(self) -> str:
        """The address the engine must listen on: all of its own namespace on a bridge network
        (only the published loopback port reaches it), loopback when it shares the host's."""
        return "127.0.0.1" if self.settings.network == "host" else "0.0.0.0"

    def client(self) -> Any:
        """The ``docker.DockerClient``; raises the SDK's ``DockerException`` when unreachable."""
        with self._lock:
            if self._client_obj is None:
                url = self._base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
                if url.startswith("unix://") and not os.path.exists(url.removeprefix("unix://")):
                    # said here, not by the SDK: its failed connect leaks the socket it opened
                    raise self._docker.errors.DockerException(f"no container engine socket at {url}")
                if self._base_url is not None:
                    self._client_obj = self._docker.DockerClient(base_url=self._base_url)
                else:
                    self._client_obj = self._docker.from_env()
            return self._client_obj

    def container_config(
        self, plan: LaunchPlan, *, name: str, gpu_ids: Sequence[int], labels: Mapping[str, str]
    ) -> ContainerConfig:
        """What :meth:`deploy` creates for ``plan`` (no secret values: they are added at start)."""
        marks = {
            **labels,
            LABEL_MANAGED: "autotuner",
            LABEL_OWNER: self.owner,
            LABEL_HOST: self.hostname,
            LABEL_DEPLOYMENT: name,
        }
        hf = self.hf_cache if self.hf_cache is not None and self.hf_cache.is_dir() else None
        return container_config(
            plan,
            image=plan.image or "",
            settings=self.settings,
            gpu_ids=gpu_ids,
            labels=marks,
            name=container_name(name),
            hf_cache=str(hf) if hf is not None else None,
            model_paths=local_paths(plan.container_args, self.allowed_volume_roots),
            mounts=self.mounts,
            files_dir=str(self.workdir(name)) if plan.files else None,
        )

    def workdir(self, name: str) -> Path:
        return self.state_dir / "work" / name

    def cleanup_orphans(self) -> list[str]:
        """Remove containers of this host whose owning process is dead; their deployment names."""
        return remove_orphans(self.client, self._docker, self.hostname)

    def close(self) -> None:
        """Tear down every live deployment, then close the connection to the container engine."""
        self.teardown_all()
        with self._lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _new_deployment(self, request: DeployRequest) -> DockerDeployment:
        return DockerDeployment(self, request)

    def _launch(self, dep: DockerDeployment) -> None:
        dep._begin()
