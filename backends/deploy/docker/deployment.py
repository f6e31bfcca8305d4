"""One engine container's life after its start: readiness, how it ended, failures, teardown.

* **The readiness clock starts when the container has started**: pulling an image says nothing
  about the configuration; the pull is bounded by the backend's ``pull_timeout_s`` instead.
* **Exit 137 under a memory limit is ``oom``.** cgroups v1 hosts (and Podman on them) report
  ``OOMKilled: false`` for a container killed at its ``--memory`` limit; the exit code (128 +
  SIGKILL) with a limit set is the reliable sign, together with the flag where it is true.
* **The tail is read after the log has caught up** (:meth:`ContainerStart.sync_log` while it
  runs, the end of the stream after it exited), so a failure quotes the engine's last words.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import threading
import time
from typing import TYPE_CHECKING, Any

from backends.deploy.base import EngineFailure, ExitInfo
from backends.deploy.docker.start import ContainerStart
from backends.deploy.shared import DeploymentCore, DeployRequest

if TYPE_CHECKING:
    from backends.deploy.docker.backend import DockerBackend

__all__ = ["EXIT_SIGKILL", "DockerDeployment"]

log = logging.getLogger(__name__)

#: Docker's exit code for a container killed by SIGKILL (the kernel's OOM killer uses it)
EXIT_SIGKILL = 137


class DockerDeployment(DeploymentCore):
    """One engine container (see :class:`~backends.deploy.base.Deployment` for the contract)."""

    _backend: DockerBackend

    def __init__(self, backend: DockerBackend, request: DeployRequest) -> None:
        super().__init__(backend, request)
        self.config = backend.container_config(
            self.plan, name=self.name, gpu_ids=self.gpu_ids, labels=request.labels
        )
        self.workdir = backend.workdir(self.name) if self.plan.files else None
        self._start = ContainerStart(self, dict(request.secrets))
        self._exit: ExitInfo | None = None
        self._oom_flag = False

    # ------------------------------------------------------------------------------ public

    @property
    def base_url(self) -> str:
        return f"http://{self._backend.host}:{self._start.port}"

    @property
    def container_id(self) -> str | None:
        c = self._start.container
        return c.id if c is not None else None

    def wait_ready(self, timeout_s: float, *, cancel: threading.Event | None = None) -> None:
        """See the protocol; the readiness clock starts when the container has started."""
        clock = self._readiness(timeout_s, cancel)
        start = self._start
        while True:
            clock.check_cancelled()
            if start.error is not None:
                raise self._with_tail(start.error)
            if not start.started.is_set():
                if time.monotonic() - clock.began >= self._backend.pull_timeout_s:
                    raise self._with_tail(
                        EngineFailure(
                            "image_unavailable",
                            f"engine {self.name}: image {self.config.image} was not pulled and started "
                            f"within {self._backend.pull_timeout_s:g} s",
                        )
                    )
                clock.restart()
                self._last_probe = "the container is not started yet (pulling or creating it)"
            elif self._answers(clock.probe_timeout(self._backend.probe_timeout_s)):
                start.sync_log()
                return
            if clock.expired():
                raise self._not_ready(clock, self._last_probe)
            clock.pause()

    def alive(self) -> bool:
        if self._torn_down.is_set() or not self._start.started.is_set():
            return False
        return self.exit_info() is None

    def exit_info(self) -> ExitInfo | None:
        if self._exit is not None:
            return self._exit
        start = self._start
        if not start.started.is_set() and (start.error is not None or self._torn_down.is_set()):
            return ExitInfo()  # never started: it could not be, or was torn down first
        if start.container is None:
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

    # ---------------------------------------------------------------------------- private

    def _begin(self) -> None:
        self._log_line(
            f"starting {self.name} (NVIDIA_VISIBLE_DEVICES={','.join(map(str, self.gpu_ids)) or 'void'}): "
            + shlex.join(self.config.argv(remove=False))
        )
        self._start.begin()

    def _answers(self, probe_timeout_s: float) -> bool:
        """Whether the started container is ready now; raises when it exited first."""
        ended = self.exit_info()
        if ended is not None:
            if self._torn_down.is_set():
                return False  # exited because we stopped it: the next round reports the cancellation
            if self._killed_at_memory_limit(ended):
                raise self._failure_now("oom", self._memory_message(ended))
            raise self._failure_now(
                "startup_crash", f"engine {self.name} {ended.describe()} before it was ready"
            )
        return self._probe(self._backend.host, self._start.port, probe_timeout_s) and self.alive()

    def _release(self) -> None:
        with self._start.lock:
            container = self._start.container
            if container is not None:
                self._stop(container)
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _state(self) -> dict[str, Any] | None:
        docker = self._backend._docker
        container = self._start.container
        try:
            container.reload()
        except docker.errors.NotFound:
            return None
        except Exception as exc:  # the engine unreachable for a moment: unknown, so not dead yet
            log.debug("cannot inspect container of %s: %s", self.name, exc)
            return {"Status": "running", "Running": True}
        state: dict[str, Any] = container.attrs.get("State", {})
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
        self._start.drain_log()
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

    def _memory_kill(self, message: str) -> str | None:
        ended = self.exit_info()
        if ended is not None and self._killed_at_memory_limit(ended):
            return self._memory_message(ended)
        return None

    def _settle_log(self, ended: ExitInfo | None) -> None:
        if ended is None:
            self._start.sync_log()
        else:
            self._start.drain_log()
