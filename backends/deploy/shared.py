"""What the local, docker and kubernetes backends do the same way, written once.

:mod:`backends.deploy.base` states the contract; this module is the one implementation of the
parts of it that do not depend on what runs the engine (a process, a container, a pod). Each
backend inherits :class:`BackendCore` and :class:`DeploymentCore` and writes only what is its
own: how to start, watch and stop the engine.

* **One ``deploy``.** Validation (name, GPU ids, file paths), the engine's environment (built
  from nothing, :mod:`backends.deploy.environment`), the set of secret values to redact and the
  registry of live names happen in :meth:`BackendCore.deploy`; a backend adds its own checks
  (:meth:`~BackendCore._check_request`) and says how a deployment is made and launched.
  Containers and pods (``isolated_env``) get no host setup variables and no
  ``CUDA_VISIBLE_DEVICES`` (the image, the device request or the device plugin decide), and
  their ``fromEnv`` values are kept apart from ``plan.env`` (they go in at start, or into a
  Secret) so that no artifact written from the plan holds one.
* **Teardown once.** :meth:`DeploymentCore.teardown` marks the deployment torn down at once
  (so a ``wait_ready`` in another thread stops within a poll), then runs the backend's
  :meth:`~DeploymentCore._release` exactly once; a second caller waits for the first to finish,
  so that "teardown returned" always means "the engine is gone". It never raises: it runs in
  ``finally`` blocks and at exit.
* **One log file shape.** Our own lines are marked :data:`~backends.deploy.base.OWN_LINE_MARK`
  and stamped by :func:`core.clock.now`; every tail and every failure message is redacted with
  the deployment's :class:`~core.redact.Redactor` (secret-looking values of the engine's
  environment, plus every referenced ``fromEnv`` value whatever its name).
* **One readiness clock** (:class:`Readiness`): cancellation, the deadline (which a backend may
  restart when the engine really begins: an image pulled, a pod scheduled), and the wait
  between polls, which wakes at once on cancel or teardown.
* **One failure builder** (:meth:`DeploymentCore._failure_now`): the log tail, the exit code,
  and the kind classified by :func:`~backends.deploy.base.classify_failure`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from backends.deploy.base import (
    OWN_LINE_MARK,
    DeployCancelled,
    EngineFailure,
    ExitInfo,
    FailureKind,
    check_files,
    check_name,
    classify_failure,
    probe_health,
)
from backends.deploy.environment import engine_environment
from backends.deploy.procs import read_tail
from backends.engines.base import LaunchPlan
from core.clock import now
from core.redact import Redactor, secret_values
from specs.policy import Policy

__all__ = [
    "DEFAULT_TAIL_LINES",
    "BackendCore",
    "DeployRequest",
    "DeploymentCore",
    "Readiness",
    "executable_missing",
    "teardown_many",
]

log = logging.getLogger(__name__)

DEFAULT_TAIL_LINES = 60


@dataclass(frozen=True)
class DeployRequest:
    """One checked ``deploy`` call: what a backend's deployment is made from."""

    plan: LaunchPlan
    name: str
    gpu_ids: tuple[int, ...]
    log_path: Path
    labels: Mapping[str, str]
    #: the engine's environment (for an isolated backend, without the ``fromEnv`` values)
    env: Mapping[str, str]
    #: engine variable → value of every ``fromEnv`` reference
    secrets: Mapping[str, str]


def teardown_many(deps: Sequence[DeploymentCore]) -> None:
    """Tear down in parallel: each may wait its full grace period, and exit time is bounded."""
    threads = [threading.Thread(target=d.teardown, name=f"teardown-{d.name}") for d in deps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


D = TypeVar("D", bound="DeploymentCore")


class BackendCore(ABC, Generic[D]):
    """The registry of a backend's live deployments and the one ``deploy``.

    A subclass sets ``environ``, ``policy`` and ``tail_lines`` (and the timing attributes its
    deployments read), calls :meth:`_init_registry`, and implements :meth:`_new_deployment`
    and :meth:`_launch`.
    """

    kind: str
    #: containers and pods: the environment describes the image, not this host (module docstring)
    isolated_env = True
    environ: Mapping[str, str] | None
    policy: Policy | None
    tail_lines: int
    poll_interval_s: float
    probe_timeout_s: float

    def _init_registry(self) -> None:
        self._names: dict[str, D] = {}
        self._lock = threading.Lock()

    def deploy(
        self,
        plan: LaunchPlan,
        *,
        name: str,
        gpu_ids: Sequence[int],
        log_path: Path,
        labels: Mapping[str, str],
    ) -> D:
        """Start the engine and return at once; see :class:`~backends.deploy.base.DeployBackend`."""
        check_name(name)
        self._check_gpus(plan, name, gpu_ids)
        check_files(name, plan.files)
        self._check_request(plan, name, labels)
        env, secrets = self._environment(plan, gpu_ids)
        if self.isolated_env:
            plan = dataclasses.replace(plan, env=env)
        request = DeployRequest(plan, name, tuple(gpu_ids), Path(log_path), dict(labels), env, secrets)
        with self._lock:
            if name in self._names:
                raise ValueError(f"deployment {name} is already running in this process")
            self._check_name_free(name)
            dep = self._new_deployment(request)
            self._names[name] = dep
        self._launch(dep)
        return dep

    def live(self) -> list[D]:
        """This backend's deployments not yet torn down."""
        with self._lock:
            return list(self._names.values())

    def teardown_all(self) -> None:
        """Tear down every live deployment of this backend (end of a session; never raises).

        ``cleanup_orphans`` does not do this: deployments of a live process are not orphans.
        """
        teardown_many(self.live())

    # ------------------------------------------------------------------- for subclasses

    def _check_gpus(self, plan: LaunchPlan, name: str, gpu_ids: Sequence[int]) -> None:
        """A lease of exactly the plan's GPUs, all distinct (a simulated engine's GPUs are not
        real: it leases none)."""
        expected = 0 if plan.simulated else plan.gpus
        if len(gpu_ids) != expected:
            raise ValueError(
                f"deployment {name}: the plan needs {expected} GPU(s) but {len(gpu_ids)} were leased"
            )
        if len(set(gpu_ids)) != len(gpu_ids):
            raise ValueError(f"deployment {name}: GPU ids {list(gpu_ids)} are not distinct")

    def _check_request(self, plan: LaunchPlan, name: str, labels: Mapping[str, str]) -> None:
        """A backend's own checks of a plan (raise ``ValueError`` or ``UserError``)."""

    def _check_name_free(self, name: str) -> None:
        """Called under the registry lock: refuse a name another live process holds."""

    def _environment(self, plan: LaunchPlan, gpu_ids: Sequence[int]) -> tuple[dict[str, str], dict[str, str]]:
        env = engine_environment(
            spec_env=plan.env,
            references=plan.env_from,
            gpu_ids=None if self.isolated_env else gpu_ids,
            daemon_env=os.environ if self.environ is None else self.environ,
            policy=self.policy,
            setup=not self.isolated_env,
        )
        if self.isolated_env:
            return env, {target: env.pop(target) for target in plan.env_from}
        return env, {target: env[target] for target in plan.env_from}

    @abstractmethod
    def _new_deployment(self, request: DeployRequest) -> D:
        """The backend's deployment object for ``request``, not started yet."""

    @abstractmethod
    def _launch(self, dep: D) -> None:
        """Begin starting ``dep`` (outside the registry lock); must not raise for engine problems."""

    def _forget(self, dep: DeploymentCore) -> None:
        with self._lock:
            if self._names.get(dep.name) is dep:
                del self._names[dep.name]


class Readiness:
    """The clock and the waits of one ``wait_ready`` loop."""

    def __init__(
        self,
        name: str,
        timeout_s: float,
        interval_s: float,
        cancel: threading.Event | None,
        torn_down: threading.Event,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.began = time.monotonic()
        self.deadline = self.began + timeout_s
        self._cancel = cancel
        self._torn_down = torn_down

    def check_cancelled(self) -> None:
        if self._torn_down.is_set() or (self._cancel is not None and self._cancel.is_set()):
            raise DeployCancelled(f"waiting for engine {self.name} was cancelled")

    def restart(self) -> None:
        """The engine only begins now: its whole start-up time runs from here."""
        self.deadline = time.monotonic() + self.timeout_s

    def extend(self, seconds: float) -> None:
        self.deadline = max(self.deadline, time.monotonic() + seconds)

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def probe_timeout(self, probe_s: float) -> float:
        return min(probe_s, max(0.1, self.deadline - time.monotonic()))

    def pause(self) -> None:
        """Until the next poll, or at once on cancel or teardown."""
        waiter = self._cancel if self._cancel is not None else self._torn_down
        waiter.wait(min(self.interval_s, self.left()))

    def timeout_message(self, why: str) -> str:
        return f"engine {self.name} was not ready after {self.timeout_s:g} s ({why})"


class DeploymentCore(ABC):
    """One deployment's shared life: teardown once, the log, readiness, classified failures.

    A subclass implements ``exit_info``, ``alive``, ``wait_ready`` and :meth:`_release`; it may
    override :meth:`_settle_log` (wait for the engine's last lines to reach the file),
    :meth:`_classify_text` (what is searched for an out-of-memory sign) and
    :meth:`_memory_kill` (its own evidence of an out-of-memory kill).
    """

    def __init__(self, backend: BackendCore[Any], request: DeployRequest) -> None:
        self.name = request.name
        self.log_path = request.log_path
        self.plan = request.plan
        self.gpu_ids = request.gpu_ids
        self.labels = dict(request.labels)
        self._backend = backend
        # referenced secrets by value whatever their name, plus anything that looks like one
        self._redactor = Redactor([*secret_values(request.env), *request.secrets.values()])
        self._torn_down = threading.Event()
        self._teardown_lock = threading.Lock()
        self._released = False
        self._log_lock = threading.Lock()
        self._last_probe = "not probed yet"

    # ---------------------------------------------------------------------- the contract

    @abstractmethod
    def exit_info(self) -> ExitInfo | None:
        """How the engine ended, or None while it runs."""

    def failure(self, kind: FailureKind = "crashed", message: str | None = None) -> EngineFailure:
        if message is None:
            message = f"engine {self.name} {self._state_words()}"
        memory = self._memory_kill(message)
        if memory is not None:
            return self._failure_now("oom", memory)
        return self._failure_now(kind, message)

    def teardown(self) -> None:
        self._torn_down.set()
        with self._teardown_lock:
            if self._released:
                return
            self._released = True
            try:
                self._release()
            except Exception:  # never raise from teardown: it runs in finally blocks and at exit
                log.exception("tearing down engine %s failed", self.name)
            finally:
                self._backend._forget(self)

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        return self._redactor.redact(read_tail(self.log_path, n_lines))

    # ------------------------------------------------------------------- for subclasses

    @abstractmethod
    def _release(self) -> None:
        """Stop everything the deployment started and wait until it is gone."""

    def _readiness(self, timeout_s: float, cancel: threading.Event | None) -> Readiness:
        return Readiness(self.name, timeout_s, self._backend.poll_interval_s, cancel, self._torn_down)

    def _probe(self, host: str, port: int | None, timeout_s: float) -> bool:
        """One round of health checks: every path must answer 2xx (why not: ``_last_probe``)."""
        problem = probe_health(host, port or 0, self.plan.health_paths, timeout_s)
        self._last_probe = problem or "ready"
        return problem is None

    def _state_words(self) -> str:
        ended = self.exit_info()
        return ended.describe() if ended is not None else "is still running"

    def _settle_log(self, ended: ExitInfo | None) -> None:  # noqa: B027 (an optional hook)
        """Before a tail is read for a failure: let the engine's last lines reach the file. A
        hook: by default there is nothing to wait for (the local log file is written directly)."""

    def _classify_text(self, tail: str) -> str:
        return tail

    def _memory_kill(self, message: str) -> str | None:
        """The message of an out-of-memory kill the backend sees itself (not in the log), or None."""
        return None

    def _tail(self) -> str:
        return self.log_tail(self._backend.tail_lines)

    def _failure_now(
        self,
        kind: FailureKind,
        message: str,
        *,
        exit_info: ExitInfo | None = None,
        hint: str | None = None,
    ) -> EngineFailure:
        ended = exit_info if exit_info is not None else self.exit_info()
        self._settle_log(ended)
        tail = self._tail()
        return EngineFailure(
            classify_failure(self._classify_text(tail), kind),
            self._redactor.redact(message),
            log_tail=tail,
            exit_code=ended.returncode if ended is not None else None,
            hint=hint,
        )

    def _not_ready(self, clock: Readiness, why: str) -> EngineFailure:
        return self._failure_now("readiness_timeout", clock.timeout_message(why))

    def _with_tail(self, failure: EngineFailure) -> EngineFailure:
        """A failure found before the engine ran (no image, no program), with the log so far."""
        return EngineFailure(
            failure.kind,
            self._redactor.redact(failure.message),
            log_tail=self._tail(),
            exit_code=failure.exit_code,
            hint=failure.hint,
        )

    def _log_line(self, text: str) -> None:
        """Our own lines in the engine log, marked; never environment values (secrets)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{OWN_LINE_MARK}{now()}] {self._redactor.redact(text)}\n")


def executable_missing(name: str, what: str, detail: str, *, where: str) -> EngineFailure:
    """The engine's program is not there (``what``: which, in words): an environment failure,
    never cached, with a hint for where it is looked for (``where``: ``host`` or ``image``)."""
    hints = {
        "host": "install the engine on the daemon's host so that its program is on the daemon's PATH "
        "(or give its full path), or use the docker backend; the experiment is retried, not cached",
        "image": "use an image that has the engine's program (spec.engine.image), or one whose "
        "entrypoint is the server; the experiment is retried, not cached",
    }
    return EngineFailure(
        "executable_missing", f"engine {name}: {what} cannot be run ({detail})", hint=hints[where]
    )
