"""The docker backend: each engine in a container of its image, through the Docker Engine API.

Built on the ``docker`` SDK (the ``docker`` extra, imported when a backend is made). It talks to
whatever ``DOCKER_HOST`` names, so Podman's Docker-compatible socket works the same; the tests
run against Podman. What goes into a container is decided by
:func:`backends.deploy.container.container_config`, which also writes ``best/docker-run.sh``,
so the artifact is the invocation that was measured.

Decisions, and why:

* **Start in a thread, fail in ``wait_ready``.** ``deploy`` must return at once and never raise
  for engine problems (the protocol's one failure path), but a missing image may take minutes
  to pull. So a starter thread pulls (with progress lines in the engine log), creates and starts
  the container; every problem becomes an :class:`EngineFailure` that ``wait_ready`` raises: no
  image → ``image_unavailable`` naming the image (an *environment* failure: retried, not cached);
  no container engine → ``environment``; an OCI runtime refusing to start → ``startup_crash``.
* **The log is a file.** The container's output is streamed into ``log_path`` while it runs,
  because the container and its log are removed at teardown and records need the tail after.
* **Exit 137 under a memory limit is ``oom``.** cgroups v1 hosts (and Podman on them) report
  ``OOMKilled: false`` for a container killed at its ``--memory`` limit; the exit code (128 +
  SIGKILL) with a limit set is the reliable sign, together with the flag where it is true.
* **Ownership by label.** Every container carries ``autotuner.owner`` (boot id, pid and start
  time of the process that made it, as the local backend's pid files do) and
  ``autotuner.host``; :meth:`DockerBackend.cleanup_orphans` removes containers of this host whose
  owner is dead, and never those of a live process. Labels carry no environment value.
* **Bridge by default, published on 127.0.0.1.** The engine listens on every address of its own
  network namespace (:attr:`DockerBackend.bind_host`), reachable from the host only through the
  loopback port; a taken host port is retried once on a fresh one without touching the argv.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.deploy import procs
from backends.deploy.base import (
    DeployCancelled,
    EngineFailure,
    ExitInfo,
    FailureKind,
    check_files,
    check_name,
    classify_failure,
    looks_like_address_in_use,
    probe_health,
    redact,
    secret_values,
)
from backends.deploy.container import ContainerConfig, Mount, container_config
from backends.deploy.environment import engine_environment
from backends.engines.base import LaunchPlan
from core import atomic
from core.redact import Redactor
from specs.errors import MissingExtraError, UserError
from specs.model import DockerBackend as DockerSettings
from specs.policy import Policy

__all__ = ["DockerBackend", "DockerDeployment", "check_volumes", "local_paths"]

log = logging.getLogger(__name__)

DEFAULT_TAIL_LINES = 60
LABEL_MANAGED = "autotuner.managed-by"
LABEL_OWNER = "autotuner.owner"
LABEL_HOST = "autotuner.host"
LABEL_DEPLOYMENT = "autotuner.deployment"
#: Docker's exit code for a container killed by SIGKILL (the kernel's OOM killer uses it)
EXIT_SIGKILL = 137


def _sdk() -> Any:
    try:
        import docker
    except ImportError:
        raise MissingExtraError("docker", "docker") from None
    return docker


def _owner_mark() -> str:
    me = procs.read_identity(os.getpid())
    if me is None:  # no /proc: nothing can tell this process alive later; mark it unknown
        return "unknown"
    return f"{me.boot_id}/{me.pid}/{me.start_time}"


def _owner_alive(mark: str) -> bool:
    """Whether the process of an ``autotuner.owner`` label still runs (unknown marks: assume yes)."""
    try:
        boot_id, pid, start = mark.split("/")
        identity = procs.ProcessIdentity(pid=int(pid), start_time=int(start), boot_id=boot_id)
    except ValueError:
        return True
    return procs.is_running(identity)


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
        if not any(source == r or r in source.parents for r in allowed):
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
        if real.exists() and any(real == r or r in real.parents for r in allowed):
            out.append(arg)
    return out


class DockerBackend:
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
        self.owner = _owner_mark()
        self._client_obj = client
        self._base_url = base_url
        self._names: dict[str, DockerDeployment] = {}
        self._lock = threading.Lock()

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

    def deploy(
        self,
        plan: LaunchPlan,
        *,
        name: str,
        gpu_ids: Sequence[int],
        log_path: Path,
        labels: Mapping[str, str],
    ) -> DockerDeployment:
        """Start the container in the background and return; see
        :class:`~backends.deploy.base.DeployBackend`."""
        check_name(name)
        expected = 0 if plan.simulated else plan.gpus
        if len(gpu_ids) != expected:
            raise ValueError(
                f"deployment {name}: the plan needs {expected} GPU(s) but {len(gpu_ids)} were leased"
            )
        if len(set(gpu_ids)) != len(gpu_ids):
            raise ValueError(f"deployment {name}: GPU ids {list(gpu_ids)} are not distinct")
        check_files(name, plan.files)
        # built from nothing (docs/security.md); no host setup variables (they describe the host,
        # not the image) and no CUDA_VISIBLE_DEVICES (the DeviceRequest renumbers the GPUs)
        env = engine_environment(
            spec_env=plan.env,
            references=plan.env_from,
            gpu_ids=None,
            daemon_env=os.environ if self.environ is None else self.environ,
            policy=self.policy,
            setup=False,
        )
        secrets = {target: env.pop(target) for target in plan.env_from}
        plan = dataclasses.replace(plan, env=env)
        with self._lock:
            if name in self._names:
                raise ValueError(f"deployment {name} is already running in this process")
            dep = DockerDeployment(
                self,
                plan,
                name=name,
                gpu_ids=gpu_ids,
                log_path=Path(log_path),
                labels=labels,
                secrets=secrets,
            )
            self._names[name] = dep
        dep._begin()
        return dep

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
        """Remove containers of this host whose owning process is dead; their deployment names.

        A container engine that cannot be reached has nothing we could clean: the problem is
        logged, and every experiment then fails as an ``environment`` failure (retried later).
        """
        try:
            found = self.client().containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=autotuner"})
        except Exception as exc:  # the SDK's errors, and requests' for a socket nobody answers
            log.warning("cannot look for orphaned containers: %s", exc)
            return []
        removed = []
        for container in found:
            labels = container.labels or {}
            if labels.get(LABEL_HOST) != self.hostname or _owner_alive(labels.get(LABEL_OWNER, "")):
                continue
            try:
                container.remove(force=True)
            except self._docker.errors.NotFound:
                pass
            except self._docker.errors.DockerException as exc:
                log.warning("cannot remove orphaned container %s: %s", container.name, exc)
                continue
            removed.append(labels.get(LABEL_DEPLOYMENT, container.name))
        return removed

    def live(self) -> list[DockerDeployment]:
        with self._lock:
            return list(self._names.values())

    def teardown_all(self) -> None:
        """Tear down every live deployment of this backend (end of a session; never raises)."""
        threads = [threading.Thread(target=d.teardown, name=f"teardown-{d.name}") for d in self.live()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        """Tear down every live deployment, then close the connection to the container engine."""
        self.teardown_all()
        with self._lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _forget(self, dep: DockerDeployment) -> None:
        with self._lock:
            if self._names.get(dep.name) is dep:
                del self._names[dep.name]


def container_name(name: str) -> str:
    """Container names are global in a container engine: prefixed, so that ours are recognisable."""
    return f"autotuner-{name}"


class DockerDeployment:
    """One engine container (see :class:`~backends.deploy.base.Deployment` for the contract)."""

    def __init__(
        self,
        backend: DockerBackend,
        plan: LaunchPlan,
        *,
        name: str,
        gpu_ids: Sequence[int],
        log_path: Path,
        labels: Mapping[str, str],
        secrets: Mapping[str, str],
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.plan = plan
        self.gpu_ids = tuple(gpu_ids)
        self._backend = backend
        self._secret_map = dict(secrets)
        self._secrets = Redactor([*secret_values(plan.env), *secrets.values()]).values
        self.config = backend.container_config(plan, name=name, gpu_ids=gpu_ids, labels=labels)
        self._port = plan.port
        self._container: Any = None
        self._error: EngineFailure | None = None
        self._started = threading.Event()
        self._torn_down = threading.Event()
        self._lock = threading.Lock()
        self._log_thread: threading.Thread | None = None
        self._exit: ExitInfo | None = None
        self._oom_flag = False
        self._last_probe = "not probed yet"
        self.workdir = backend.workdir(name) if plan.files else None

    # ------------------------------------------------------------------------------ public

    @property
    def base_url(self) -> str:
        return f"http://{self._backend.host}:{self._port}"

    @property
    def container_id(self) -> str | None:
        c = self._container
        return c.id if c is not None else None

    def wait_ready(self, timeout_s: float, *, cancel: threading.Event | None = None) -> None:
        """See the protocol. The readiness clock starts when the container has started: pulling
        an image says nothing about the configuration (it is bounded by ``pull_timeout_s``)."""
        begun = time.monotonic()
        deadline = begun + timeout_s
        waiter = cancel if cancel is not None else self._torn_down
        while True:
            if self._torn_down.is_set() or (cancel is not None and cancel.is_set()):
                raise DeployCancelled(f"waiting for engine {self.name} was cancelled")
            if self._error is not None:
                raise self._with_tail(self._error)
            if not self._started.is_set():
                if time.monotonic() - begun >= self._backend.pull_timeout_s:
                    raise self._with_tail(
                        EngineFailure(
                            "image_unavailable",
                            f"engine {self.name}: image {self.config.image} was not pulled and started "
                            f"within {self._backend.pull_timeout_s:g} s",
                        )
                    )
                deadline = time.monotonic() + timeout_s
                self._last_probe = "the container is not started yet (pulling or creating it)"
            else:
                ended = self.exit_info()
                if ended is not None:
                    if self._torn_down.is_set():
                        continue
                    raise self._exited_failure(ended)
                problem = probe_health(
                    self._backend.host,
                    self._port,
                    self.plan.health_paths,
                    min(self._backend.probe_timeout_s, max(0.1, deadline - time.monotonic())),
                )
                self._last_probe = problem or "ready"
                if problem is None and self.alive():
                    self._sync_log()
                    return
            if time.monotonic() >= deadline:
                raise self._failure_now(
                    "readiness_timeout",
                    f"engine {self.name} was not ready after {timeout_s:g} s ({self._last_probe})",
                )
            waiter.wait(min(self._backend.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def alive(self) -> bool:
        if self._torn_down.is_set() or not self._started.is_set():
            return False
        return self.exit_info() is None

    def exit_info(self) -> ExitInfo | None:
        if self._exit is not None:
            return self._exit
        container = self._container
        if not self._started.is_set() and (self._error is not None or self._torn_down.is_set()):
            return ExitInfo()  # never started: it could not be, or was torn down first
        if container is None:
            return None  # on its way (pulling, creating)
        state = self._state()
        if state is None:  # gone from the engine: someone removed it
            self._exit = ExitInfo()
            return self._exit
        if state.get("Status") in ("exited", "dead", "stopped"):
            code = int(state.get("ExitCode") or 0)
            # docker reports a signal death as 128 + the signal number
            self._exit = ExitInfo(signal=code - 128) if code > 128 else ExitInfo(exit_code=code)
            self._oom_flag = bool(state.get("OOMKilled"))
            return self._exit
        return None

    def failure(self, kind: FailureKind = "crashed", message: str | None = None) -> EngineFailure:
        ended = self.exit_info()
        if ended is not None and self._killed_at_memory_limit(ended):
            return self._failure_now("oom", self._memory_message(ended))
        if message is None:
            state = ended.describe() if ended is not None else "is still running"
            message = f"engine {self.name} {state}"
        return self._failure_now(kind, message)

    def teardown(self) -> None:
        self._torn_down.set()
        try:
            with self._lock:
                container = self._container
                if container is not None:
                    self._stop(container)
                if self.workdir is not None:
                    shutil.rmtree(self.workdir, ignore_errors=True)
        except Exception:  # never raise from teardown: it runs in finally blocks and at exit
            log.exception("tearing down container of %s failed", self.name)
        finally:
            self._backend._forget(self)

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        return redact(procs.read_tail(self.log_path, n_lines), self._secrets)

    # ---------------------------------------------------------------------------- private

    def _begin(self) -> None:
        self._log_line(
            f"starting {self.name} (NVIDIA_VISIBLE_DEVICES={','.join(map(str, self.gpu_ids)) or 'void'}): "
            + shlex.join(self.config.argv(remove=False))
        )
        threading.Thread(target=self._start, name=f"docker-start-{self.name}", daemon=True).start()

    def _start(self) -> None:
        import requests  # the docker SDK's transport: its connection errors are not DockerException

        docker = self._backend._docker
        image = self.config.image
        try:
            if not image:
                raise EngineFailure(
                    "image_unavailable",
                    f"engine {self.name}: the spec names no image (spec.engine.image) and this engine "
                    "has no official one",
                )
            client = self._backend.client()
            self._ensure_image(client, image)
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                for rel, content in self.plan.files.items():
                    atomic.write_text(self.workdir / rel, content)
            self._create_and_start(client)
        except EngineFailure as failure:
            self._error = failure
        except docker.errors.ImageNotFound as exc:
            self._error = EngineFailure(
                "image_unavailable", f"engine {self.name}: image {image} is not available: {_explain(exc)}"
            )
        except docker.errors.APIError as exc:
            self._error = EngineFailure(
                "startup_crash", f"engine {self.name}: the container could not start: {_explain(exc)}"
            )
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self._error = EngineFailure(
                "environment",
                f"engine {self.name}: the container engine is not reachable: {exc}",
                hint="start the Docker (or Podman) service, or point DOCKER_HOST at its socket; the "
                "experiment is retried, not cached",
            )
        except Exception as exc:  # a bug, but the caller must still get its failure, not a hang
            log.exception("starting container of %s failed", self.name)
            self._error = EngineFailure("environment", f"engine {self.name}: {type(exc).__name__}: {exc}")
        if self._error is not None:
            self._log_line(f"cannot start {self.name}: {self._error.message}")

    def _ensure_image(self, client: Any, image: str) -> None:
        docker = self._backend._docker
        try:
            client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        self._log_line(f"image {image} is not here; pulling it")
        last = 0.0
        try:
            # the SDK splits the reference (a tag, a digest, a registry with a port) itself
            for event in client.api.pull(image, stream=True, decode=True):
                if self._torn_down.is_set():
                    return
                if "error" in event:
                    raise EngineFailure(
                        "image_unavailable",
                        f"engine {self.name}: image {image} cannot be pulled: {event['error']}",
                    )
                now = time.monotonic()
                if now - last >= 5.0:  # progress, not one line per layer chunk
                    last = now
                    self._log_line(f"pulling {image}: {event.get('status', '')} {event.get('progress', '')}")
            client.images.get(image)
        except docker.errors.APIError as exc:
            raise EngineFailure(
                "image_unavailable", f"engine {self.name}: image {image} cannot be pulled: {_explain(exc)}"
            ) from None

    def _create_and_start(self, client: Any) -> None:
        docker = self._backend._docker
        kwargs = self.config.sdk_kwargs(self._secret_map)
        ports_left = 1
        while True:
            with self._lock:
                if self._torn_down.is_set():
                    return
                self._remove_leftover(client, kwargs["name"])
                container = client.containers.create(**kwargs)
                self._container = container
                try:
                    container.start()
                except docker.errors.APIError as exc:
                    if ports_left > 0 and "ports" in kwargs and looks_like_address_in_use(_explain(exc)):
                        ports_left -= 1
                        self._container = None
                        container.remove(force=True)
                        new_port = procs.free_port(self._backend.host)
                        self._log_line(f"port {self._port} was taken; publishing on {new_port} instead")
                        kwargs["ports"] = {
                            key: (value[0], new_port) if isinstance(value, tuple) else new_port
                            for key, value in kwargs["ports"].items()
                        }
                        self._port = new_port
                        continue
                    raise
                self._log_thread = threading.Thread(
                    target=self._stream_logs, args=(container,), name=f"docker-log-{self.name}", daemon=True
                )
                self._log_thread.start()
                self._started.set()
                return

    def _remove_leftover(self, client: Any, cname: str) -> None:
        """A container of the same name: a dead owner's is removed, a live owner's is refused."""
        docker = self._backend._docker
        try:
            old = client.containers.get(cname)
        except docker.errors.NotFound:
            return
        owner = (old.labels or {}).get(LABEL_OWNER, "")
        if owner == self._backend.owner or _owner_alive(owner):
            raise EngineFailure(
                "environment",
                f"engine {self.name}: a container named {cname} already exists and belongs to a running "
                "process (another autotuner on this container engine?)",
            )
        old.remove(force=True)

    def _stream_logs(self, container: Any) -> None:
        """The container's output, appended to the log file as it comes (it outlives the container)."""
        stream = None
        try:
            stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)
            with open(self.log_path, "ab") as f:
                for chunk in stream:
                    f.write(chunk)
                    f.flush()
        except Exception as exc:  # the container went away mid-stream: the file has what came
            log.debug("log stream of %s ended: %s", self.name, exc)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def _sync_log(self, timeout_s: float = 2.0) -> None:
        """Wait (briefly) until what the engine has written so far is in the log file.

        The stream lags the engine by a little, and a caller reads the tail right after
        ``wait_ready`` or a failure: the last line the API has must have reached the file.
        """
        container = self._container
        if container is None:
            return
        try:
            last = container.logs(stdout=True, stderr=True, tail=1).strip()
        except Exception:  # gone, or the engine is unreachable: the file has what it has
            return
        if not last:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if last in procs.read_tail(self.log_path, 20).encode(errors="replace"):
                return
            time.sleep(0.02)

    def _state(self) -> dict[str, Any] | None:
        docker = self._backend._docker
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return None
        except Exception as exc:  # the engine unreachable for a moment: unknown, so not dead yet
            log.debug("cannot inspect container of %s: %s", self.name, exc)
            return {"Status": "running", "Running": True}
        state: dict[str, Any] = self._container.attrs.get("State", {})
        return state

    def _stop(self, container: Any) -> None:
        docker = self._backend._docker
        try:
            container.stop(timeout=max(1, round(self._backend.grace_s)))
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.warning("stopping container of %s failed, removing it by force: %s", self.name, exc)
        self.exit_info()  # remember how it ended before it is gone
        self._drain_log()
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
        if self._exit is None:
            self._exit = ExitInfo(signal=9)

    def _killed_at_memory_limit(self, ended: ExitInfo) -> bool:
        if self._oom_flag:
            return True
        return self.config.memory is not None and ended.returncode in (-9, EXIT_SIGKILL)

    def _memory_message(self, ended: ExitInfo) -> str:
        return (
            f"engine {self.name} was killed at the container's memory limit "
            f"(spec.backend.memory: {self.config.memory}; {ended.describe()}, exit code {EXIT_SIGKILL})"
        )

    def _drain_log(self) -> None:
        """After an exit: the stream ends with the container; let its last lines land."""
        thread = self._log_thread
        if thread is not None:
            thread.join(timeout=5.0)

    def _exited_failure(self, ended: ExitInfo) -> EngineFailure:
        if self._killed_at_memory_limit(ended):
            return self._failure_now("oom", self._memory_message(ended))
        return self._failure_now(
            "startup_crash", f"engine {self.name} {ended.describe()} before it was ready"
        )

    def _with_tail(self, failure: EngineFailure) -> EngineFailure:
        return EngineFailure(
            failure.kind,
            failure.message,
            log_tail=self.log_tail(self._backend.tail_lines),
            exit_code=failure.exit_code,
            hint=failure.hint,
        )

    def _failure_now(self, kind: FailureKind, message: str) -> EngineFailure:
        ended = self.exit_info()
        if ended is None:
            self._sync_log()
        else:
            self._drain_log()
        tail = self.log_tail(self._backend.tail_lines)
        return EngineFailure(
            classify_failure(tail, kind) if kind != "oom" else kind,
            message,
            log_tail=tail,
            exit_code=ended.returncode if ended is not None else None,
        )

    def _log_line(self, text: str) -> None:
        """Our own lines in the engine log, marked; never environment values (secrets)."""
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"[autotuner {stamp}] {redact(text, self._secrets)}\n")


def _explain(exc: Any) -> str:
    """The container engine's own words for an API error (``explanation``), else the error."""
    return str(getattr(exc, "explanation", None) or exc)
