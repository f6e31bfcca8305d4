"""The local backend: the engine as a child process of this tool, on this host's GPUs.

Process handling (own process group, parent-death signal, pid files, teardown of the whole group)
lives in :mod:`backends.deploy.procs`; this module adds what makes a process an *engine
deployment*: the environment (built from nothing by :mod:`backends.deploy.environment`, with
``CUDA_VISIBLE_DEVICES`` from the lease), readiness polling over
HTTP, failure classification, and the one retry on a port that was taken between
:func:`~backends.deploy.procs.free_port` and the engine's bind.

Port decision: the *caller* picks the port with :func:`~backends.deploy.procs.free_port` and
hands it to the engine mapping, which writes it into the argv (the mapping is pure and owns the
flag spelling). If the engine then dies with "address already in use", this backend rewrites
the value after ``--port`` in the argv (only when it appears exactly once), starts again on a
fresh port once, and :attr:`LocalDeployment.base_url` follows. Hence the rule that callers read
``base_url`` after ``wait_ready``.

Every live deployment is also registered for an ``atexit`` teardown, so a normal exit or an
unhandled exception stops engines gracefully; ``kill -9`` is covered by the parent-death signal
and by :meth:`LocalBackend.cleanup_orphans` at the next start. (A daemon must turn SIGTERM into
an exception or a clean exit for ``atexit`` to run; Python's default SIGTERM action does not.)
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

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
from backends.deploy.environment import engine_environment
from backends.engines.base import LaunchPlan
from core import atomic
from core.clock import now
from core.redact import Redactor
from specs.policy import Policy

__all__ = ["LocalBackend", "LocalDeployment"]

log = logging.getLogger(__name__)

DEFAULT_TAIL_LINES = 60
#: how much of the current attempt's log is searched when classifying a failure
_CLASSIFY_BYTES = 1024 * 1024

_live: set[LocalDeployment] = set()
_live_lock = threading.Lock()


def _teardown_many(deps: Sequence[LocalDeployment]) -> None:
    """Tear down in parallel: each may wait its full grace period, and exit time is bounded."""
    threads = [threading.Thread(target=d.teardown, name=f"teardown-{d.name}") for d in deps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@atexit.register
def _teardown_all_at_exit() -> None:
    with _live_lock:
        pending = list(_live)
    _teardown_many(pending)


class LocalBackend:
    """Deploys engines as local subprocesses. Thread safe; instances may share a state directory.

    ``state_dir`` is the daemon's state directory; pid files go to ``state_dir/local/``, the
    working directories of plans with files to ``state_dir/work/<name>/``.
    ``grace_s`` is how long an engine gets between SIGTERM and SIGKILL (vLLM and SGLang need a
    few seconds to free their GPUs cleanly); ``environ`` is where engines' setup variables and
    ``fromEnv`` references are read from (default: this process's environment); engines never
    inherit it whole, see
    :mod:`backends.deploy.environment`. ``policy`` is the operator's (loader variables, which
    references a spec may read, ``passEnv``).
    """

    kind = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        grace_s: float = 10.0,
        kill_wait_s: float = 30.0,
        poll_interval_s: float = 0.25,
        probe_timeout_s: float = 2.0,
        port_retries: int = 1,
        tail_lines: int = DEFAULT_TAIL_LINES,
        environ: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        policy: Policy | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.pid_dir = self.state_dir / "local"
        self.grace_s = grace_s
        self.kill_wait_s = kill_wait_s
        self.poll_interval_s = poll_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.port_retries = port_retries
        self.tail_lines = tail_lines
        self.environ = environ
        self.host = host
        self.policy = policy
        self._names: dict[str, LocalDeployment] = {}
        self._lock = threading.Lock()

    @property
    def bind_host(self) -> str:
        return self.host

    def deploy(
        self,
        plan: LaunchPlan,
        *,
        name: str,
        gpu_ids: Sequence[int],
        log_path: Path,
        labels: Mapping[str, str],
    ) -> LocalDeployment:
        """Start ``plan.argv`` now and return; see :class:`~backends.deploy.base.DeployBackend`."""
        check_name(name)
        expected = 0 if plan.simulated else plan.gpus  # a simulated engine's GPUs are not real: none leased
        if len(gpu_ids) != expected:
            raise ValueError(
                f"deployment {name}: the plan needs {expected} GPU(s) but {len(gpu_ids)} were leased"
            )
        check_files(name, plan.files)
        env = engine_environment(
            spec_env=plan.env,
            references=plan.env_from,
            gpu_ids=gpu_ids,
            daemon_env=os.environ if self.environ is None else self.environ,
            policy=self.policy,
        )
        secrets = {target: env[target] for target in plan.env_from}
        if len(set(gpu_ids)) != len(gpu_ids):
            raise ValueError(f"deployment {name}: GPU ids {list(gpu_ids)} are not distinct")
        if not plan.argv:
            raise ValueError(f"deployment {name}: the plan has an empty command line")
        with self._lock:
            if name in self._names:
                raise ValueError(f"deployment {name} is already running in this process")
            self._check_foreign_owner(name)
            dep = LocalDeployment(
                self,
                plan,
                name=name,
                gpu_ids=gpu_ids,
                log_path=Path(log_path),
                labels=labels,
                env=env,
                secrets=secrets,
            )
            self._names[name] = dep
        with _live_lock:
            _live.add(dep)
        dep._start()
        return dep

    def cleanup_orphans(self) -> list[str]:
        """Stop engines left running by dead earlier processes; their names (see ``procs``)."""
        return procs.cleanup_orphans(
            self.pid_dir, grace_s=min(self.grace_s, 5.0), kill_wait_s=self.kill_wait_s
        )

    def live(self) -> list[LocalDeployment]:
        """This backend's deployments not yet torn down."""
        with self._lock:
            return list(self._names.values())

    def teardown_all(self) -> None:
        """Tear down every live deployment of this backend (end of a session; never raises).

        :meth:`cleanup_orphans` does not do this: deployments of a live process are not orphans.
        """
        _teardown_many(self.live())

    def _check_foreign_owner(self, name: str) -> None:
        path = procs.pid_file_path(self.pid_dir, name)
        if not path.exists():
            return
        record = procs.read_pid_file(path)
        if record is not None and record.owner is not None and procs.is_running(record.owner):
            raise ValueError(
                f"deployment name {name} is in use by process {record.owner.pid} (pid file {path})"
            )
        # a dead owner's leftover under the same name: stop whatever it left, then reuse the name
        procs.cleanup_orphans(self.pid_dir, names={name}, grace_s=min(self.grace_s, 5.0))

    def _forget(self, dep: LocalDeployment) -> None:
        with self._lock:
            if self._names.get(dep.name) is dep:
                del self._names[dep.name]
        with _live_lock:
            _live.discard(dep)


class LocalDeployment:
    """One engine subprocess (see :class:`~backends.deploy.base.Deployment` for the contract)."""

    def __init__(
        self,
        backend: LocalBackend,
        plan: LaunchPlan,
        *,
        name: str,
        gpu_ids: Sequence[int],
        log_path: Path,
        labels: Mapping[str, str],
        env: Mapping[str, str],
        secrets: Mapping[str, str],
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.plan = plan
        self.gpu_ids = tuple(gpu_ids)
        self.labels = dict(labels)
        self._backend = backend
        self._argv = list(plan.argv)
        self._port = plan.port
        self._env = dict(env)
        # referenced secrets by value whatever their name, plus anything that looks like one
        self._secrets = Redactor([*secret_values(self._env), *secrets.values()]).values
        self.workdir: Path | None = backend.state_dir / "work" / name if plan.files else None
        self._ports_left = backend.port_retries
        self._proc: procs.SpawnedProcess | None = None
        self._spawn_error: str | None = None
        self._attempt_offset = 0
        self._torn_down = threading.Event()
        # serializes a port retry's respawn against teardown from another thread
        self._lock = threading.Lock()
        self._last_probe = "not probed yet"

    # ------------------------------------------------------------------------------ public

    @property
    def base_url(self) -> str:
        return f"http://{self._backend.host}:{self._port}"

    @property
    def argv(self) -> list[str]:
        """The command line of the current attempt (the port may differ from the plan's)."""
        return list(self._argv)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def wait_ready(self, timeout_s: float, *, cancel: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        interval = self._backend.poll_interval_s
        while True:
            if self._torn_down.is_set() or (cancel is not None and cancel.is_set()):
                raise DeployCancelled(f"waiting for engine {self.name} was cancelled")
            if self._spawn_error is not None:
                raise EngineFailure(
                    "startup_crash",
                    f"engine {self.name} could not be started: {self._spawn_error}",
                    log_tail=self.log_tail(self._backend.tail_lines),
                    hint="check that the engine is installed in the daemon's environment (PATH), "
                    "or use the docker backend",
                )
            proc = self._proc
            assert proc is not None  # _start sets either _proc or _spawn_error
            ended = proc.exit_info()
            if ended is not None:
                if self._retry_on_new_port():
                    continue
                if self._torn_down.is_set():
                    continue  # exited because we stopped it: report the cancellation instead
                raise self._failure_now(
                    "startup_crash", f"engine {self.name} {ended.describe()} before it was ready"
                )
            probe_timeout = min(self._backend.probe_timeout_s, max(0.1, deadline - time.monotonic()))
            if self._probe(probe_timeout) and proc.alive():
                # alive *after* the probe too: else whatever else holds the port may have answered
                return
            if time.monotonic() >= deadline:
                raise self._failure_now(
                    "readiness_timeout",
                    f"engine {self.name} was not ready after {timeout_s:g} s ({self._last_probe})",
                )
            waiter = cancel if cancel is not None else self._torn_down
            waiter.wait(min(interval, max(0.0, deadline - time.monotonic())))

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and not self._torn_down.is_set() and proc.alive()

    def exit_info(self) -> ExitInfo | None:
        proc = self._proc
        if proc is None:
            return ExitInfo()
        return proc.exit_info()

    def failure(self, kind: FailureKind = "crashed", message: str | None = None) -> EngineFailure:
        if message is None:
            ended = self.exit_info()
            state = ended.describe() if ended is not None else "is still running"
            message = f"engine {self.name} {state}"
        return self._failure_now(kind, message)

    def teardown(self) -> None:
        self._torn_down.set()
        try:
            with self._lock:
                if self._proc is not None:
                    self._proc.stop(self._backend.grace_s, self._backend.kill_wait_s)
                if self.workdir is not None:
                    shutil.rmtree(self.workdir, ignore_errors=True)
        except Exception:  # never raise from teardown: it runs in finally blocks and at exit
            log.exception("tearing down engine %s failed", self.name)
        finally:
            self._backend._forget(self)

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        return redact(procs.read_tail(self.log_path, n_lines), self._secrets)

    # ---------------------------------------------------------------------------- private

    def _start(self) -> None:
        """Spawn the current argv; a program that cannot start is recorded, not raised."""
        try:
            self._attempt_offset = self.log_path.stat().st_size
        except OSError:
            self._attempt_offset = 0
        visible = self._env.get("CUDA_VISIBLE_DEVICES", "")
        self._log_line(f"starting {self.name} (CUDA_VISIBLE_DEVICES={visible!r}): {shlex.join(self._argv)}")
        try:
            if self.workdir is not None:
                self._write_files(self.workdir)
            self._proc = procs.spawn(
                self._argv,
                env=self._env,
                log_path=self.log_path,
                name=self.name,
                pid_dir=self._backend.pid_dir,
                labels=self.labels,
                cwd=self.workdir,
            )
        except OSError as exc:
            self._spawn_error = f"{self._argv[0]}: {exc.strerror or exc}"
            self._log_line(f"cannot start {self.name}: {self._spawn_error}")

    def _write_files(self, workdir: Path) -> None:
        """The plan's files in a fresh working directory (a leftover of the same name is replaced)."""
        shutil.rmtree(workdir, ignore_errors=True)
        for rel, content in self.plan.files.items():
            atomic.write_text(workdir / rel, content)

    def _retry_on_new_port(self) -> bool:
        """After an exit: if the port was taken, start again once on a fresh one."""
        if self._ports_left <= 0 or not looks_like_address_in_use(self._attempt_log()):
            return False
        new_port = procs.free_port()
        new_argv = rewrite_port(self._argv, self._port, new_port)
        if new_argv is None:
            return False
        with self._lock:
            if self._torn_down.is_set():
                return False
            self._ports_left -= 1
            old = self._proc
            if old is not None:
                old.stop(0.0, self._backend.kill_wait_s)  # exited already; reaps it, drops its pid file
            self._log_line(f"port {self._port} was taken; retrying on port {new_port}")
            self._argv, self._port = new_argv, new_port
            self._start()
        return True

    def _probe(self, timeout_s: float) -> bool:
        """One round of health checks: every path must answer 2xx."""
        problem = probe_health(self._backend.host, self._port, self.plan.health_paths, timeout_s)
        self._last_probe = problem or "ready"
        return problem is None

    def _attempt_log(self) -> str:
        """The log of the current attempt only (a retry must not see the previous attempt's error)."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(self._attempt_offset, size - _CLASSIFY_BYTES))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _failure_now(self, kind: FailureKind, message: str) -> EngineFailure:
        ended = self.exit_info()
        return EngineFailure(
            classify_failure(self._attempt_log(), kind),
            message,
            log_tail=self.log_tail(self._backend.tail_lines),
            exit_code=ended.returncode if ended is not None else None,
        )

    def _log_line(self, text: str) -> None:
        """Our own lines in the engine log, marked; never environment values (secrets)."""
        stamp = now()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"[autotuner {stamp}] {redact(text, self._secrets)}\n")


def rewrite_port(argv: Sequence[str], old: int, new: int) -> list[str] | None:
    """``argv`` with the value of its one ``--port`` flag changed, or ``None`` if not exactly one."""
    hits = [
        i
        for i, a in enumerate(argv)
        if (a == "--port" and i + 1 < len(argv) and argv[i + 1] == str(old)) or a == f"--port={old}"
    ]
    if len(hits) != 1:
        return None
    out = list(argv)
    i = hits[0]
    if out[i] == "--port":
        out[i + 1] = str(new)
    else:
        out[i] = f"--port={new}"
    return out
