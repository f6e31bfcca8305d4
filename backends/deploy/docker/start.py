"""Getting one engine container running: image, create, start, and its log into a file.

``deploy`` must return at once and never raise for engine problems (the protocol's one failure
path), but a missing image may take minutes to pull. So :class:`ContainerStart` runs in a
thread of its own: it pulls (with progress lines in the engine log), creates and starts the
container, and turns every problem into the :class:`EngineFailure` that ``wait_ready`` raises:

* no image, or a pull that fails → ``image_unavailable`` naming the image;
* the image lacks the program to run → ``executable_missing`` (both *environment* failures:
  retried, never cached);
* no container engine → ``environment``;
* the OCI runtime refusing to start for another reason → ``startup_crash``.

A taken host port is retried once on a fresh one, without touching the argv (only the
published port changes). The container's output is streamed into ``log_path`` while it runs,
because the container and its log are removed at teardown and records need the tail after.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from typing import TYPE_CHECKING, Any

from backends.deploy import procs
from backends.deploy.base import looks_like_address_in_use, looks_like_missing_executable
from backends.deploy.docker.ownership import remove_leftover
from backends.deploy.shared import executable_missing
from core import atomic
from specs.errors import EngineFailure

if TYPE_CHECKING:
    from backends.deploy.docker.deployment import DockerDeployment

__all__ = ["ContainerStart"]

log = logging.getLogger(__name__)

#: seconds between two progress lines of a pull (not one line per layer chunk)
PULL_PROGRESS_S = 5.0


def explain(exc: Any) -> str:
    """The container engine's own words for an API error (``explanation``), else the error."""
    return str(getattr(exc, "explanation", None) or exc)


class ContainerStart:
    """The start of one deployment's container, and what came of it (read by the deployment)."""

    def __init__(self, dep: DockerDeployment, secrets: dict[str, str]) -> None:
        self._dep = dep
        self._backend = dep._backend
        self._secrets = secrets
        self.port = dep.plan.port
        self.container: Any = None
        self.error: EngineFailure | None = None
        self.started = threading.Event()
        self.log_thread: threading.Thread | None = None
        #: serializes creating the container against teardown from another thread
        self.lock = threading.Lock()

    def begin(self) -> None:
        threading.Thread(target=self._run, name=f"docker-start-{self._dep.name}", daemon=True).start()

    def _run(self) -> None:
        import requests  # the docker SDK's transport: its connection errors are not DockerException

        docker = self._backend._docker
        try:
            self._start()
        except EngineFailure as failure:
            self.error = failure
        except docker.errors.ImageNotFound as exc:
            self.error = EngineFailure(
                "image_unavailable",
                f"engine {self._dep.name}: image {self._dep.config.image} is not available: {explain(exc)}",
            )
        except docker.errors.APIError as exc:
            self.error = self._refused(exc)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self.error = EngineFailure(
                "environment",
                f"engine {self._dep.name}: the container engine is not reachable: {exc}",
                hint="start the Docker (or Podman) service, or point DOCKER_HOST at its socket; the "
                "experiment is retried, not cached",
            )
        except Exception as exc:  # a bug, but the caller must still get its failure, not a hang
            log.exception("starting container of %s failed", self._dep.name)
            self.error = EngineFailure("environment", f"engine {self._dep.name}: {type(exc).__name__}: {exc}")
        if self.error is not None:
            self._dep._log_line(f"cannot start {self._dep.name}: {self.error.message}")

    def _refused(self, exc: Any) -> EngineFailure:
        """The engine refused to create or start the container: a missing program is the image's
        problem (an environment failure); anything else is taken as the configuration's."""
        words = explain(exc)
        config = self._dep.config
        program = config.command[0] if config.command else ""
        if looks_like_missing_executable(words, program):
            return executable_missing(
                self._dep.name, f"the program of image {config.image}", words, where="image"
            )
        return EngineFailure(
            "startup_crash", f"engine {self._dep.name}: the container could not start: {words}"
        )

    def _start(self) -> None:
        dep = self._dep
        image = dep.config.image
        if not image:
            raise EngineFailure(
                "image_unavailable",
                f"engine {dep.name}: the spec names no image (spec.engine.image) and this engine "
                "has no official one",
            )
        client = self._backend.client()
        self._ensure_image(client, image)
        if dep.workdir is not None:
            shutil.rmtree(dep.workdir, ignore_errors=True)
            for rel, content in dep.plan.files.items():
                atomic.write_text(dep.workdir / rel, content)
        self._create_and_start(client)

    def _ensure_image(self, client: Any, image: str) -> None:
        docker = self._backend._docker
        try:
            client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        self._dep._log_line(f"image {image} is not here; pulling it")
        try:
            self._pull(client, image)
        except docker.errors.APIError as exc:
            raise EngineFailure(
                "image_unavailable",
                f"engine {self._dep.name}: image {image} cannot be pulled: {explain(exc)}",
            ) from None

    def _pull(self, client: Any, image: str) -> None:
        last = 0.0
        # the SDK splits the reference (a tag, a digest, a registry with a port) itself
        for event in client.api.pull(image, stream=True, decode=True):
            if self._dep._torn_down.is_set():
                return
            if "error" in event:
                raise EngineFailure(
                    "image_unavailable",
                    f"engine {self._dep.name}: image {image} cannot be pulled: {event['error']}",
                )
            now = time.monotonic()
            if now - last >= PULL_PROGRESS_S:
                last = now
                self._dep._log_line(f"pulling {image}: {event.get('status', '')} {event.get('progress', '')}")
        client.images.get(image)

    def _create_and_start(self, client: Any) -> None:
        docker = self._backend._docker
        kwargs = self._dep.config.sdk_kwargs(self._secrets)
        ports_left = 1
        while True:
            with self.lock:
                if self._dep._torn_down.is_set():
                    return
                remove_leftover(
                    client, docker, kwargs["name"], me=self._backend.owner, deployment=self._dep.name
                )
                container = client.containers.create(**kwargs)
                self.container = container
                try:
                    container.start()
                except docker.errors.APIError as exc:
                    if ports_left > 0 and "ports" in kwargs and looks_like_address_in_use(explain(exc)):
                        ports_left -= 1
                        self._republish(container, kwargs)
                        continue
                    raise
                self.log_thread = threading.Thread(
                    target=self._stream_logs,
                    args=(container,),
                    name=f"docker-log-{self._dep.name}",
                    daemon=True,
                )
                self.log_thread.start()
                self.started.set()
                return

    def _republish(self, container: Any, kwargs: dict[str, Any]) -> None:
        """The host port was taken: drop the container, publish the next one on a fresh port."""
        self.container = None
        container.remove(force=True)
        new_port = procs.free_port(self._backend.host)
        self._dep._log_line(f"port {self.port} was taken; publishing on {new_port} instead")
        kwargs["ports"] = {
            key: (value[0], new_port) if isinstance(value, tuple) else new_port
            for key, value in kwargs["ports"].items()
        }
        self.port = new_port

    def _stream_logs(self, container: Any) -> None:
        """The container's output, appended to the log file as it comes (it outlives the container)."""
        stream = None
        try:
            stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)
            with open(self._dep.log_path, "ab") as f:
                for chunk in stream:
                    f.write(chunk)
                    f.flush()
        except Exception as exc:  # the container went away mid-stream: the file has what came
            log.debug("log stream of %s ended: %s", self._dep.name, exc)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def sync_log(self, timeout_s: float = 2.0) -> None:
        """Wait (briefly) until what the engine has written so far is in the log file.

        The stream lags the engine by a little, and a caller reads the tail right after
        ``wait_ready`` or a failure: the last line the API has must have reached the file.
        """
        container = self.container
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
            if last in procs.read_tail(self._dep.log_path, 20).encode(errors="replace"):
                return
            time.sleep(0.02)

    def drain_log(self) -> None:
        """After an exit: the stream ends with the container; let its last lines land."""
        thread = self.log_thread
        if thread is not None:
            thread.join(timeout=5.0)
