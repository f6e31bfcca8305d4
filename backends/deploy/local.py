"""The local backend: the engine as a child process of this tool, on this host's GPUs.

Process handling (own process group, parent-death signal, pid files, teardown of the whole group)
lives in :mod:`backends.deploy.procs`; what every backend does alike (validation, the
environment built from nothing with ``CUDA_VISIBLE_DEVICES`` from the lease, teardown once, the
redacted tail, the readiness clock, classified failures) in :mod:`backends.deploy.shared`.
This module adds what makes a process an *engine deployment*: spawning it (a program that is
not there is ``executable_missing``, an environment failure naming the program and the
``PATH`` searched, never cached), readiness over HTTP while watching the process, and the one
retry on a port that was taken between :func:`~backends.deploy.procs.free_port` and the
engine's bind.

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
from collections.abc import Mapping, Sequence
from pathlib import Path

from backends.deploy import procs
from backends.deploy.base import EngineFailure, ExitInfo, looks_like_address_in_use
from backends.deploy.shared import (
    DEFAULT_TAIL_LINES,
    BackendCore,
    DeploymentCore,
    DeployRequest,
    executable_missing,
    teardown_many,
)
from backends.engines.base import LaunchPlan
from core import atomic
from specs.policy import Policy

__all__ = ["LocalBackend", "LocalDeployment"]

log = logging.getLogger(__name__)

#: how much of the current attempt's log is searched when classifying a failure
_CLASSIFY_BYTES = 1024 * 1024

_live: set[DeploymentCore] = set()
_live_lock = threading.Lock()


@atexit.register
def _teardown_all_at_exit() -> None:
    with _live_lock:
        pending = list(_live)
    teardown_many(pending)


class LocalBackend(BackendCore["LocalDeployment"]):
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
    #: a local engine runs on this host, with its setup variables and the leased GPUs' ids
    isolated_env = False

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
        self._init_registry()

    @property
    def bind_host(self) -> str:
        return self.host

    def cleanup_orphans(self) -> list[str]:
        """Stop engines left running by dead earlier processes; their names (see ``procs``)."""
        return procs.cleanup_orphans(
            self.pid_dir, grace_s=min(self.grace_s, 5.0), kill_wait_s=self.kill_wait_s
        )

    def _check_request(self, plan: LaunchPlan, name: str, labels: Mapping[str, str]) -> None:
        if not plan.argv:
            raise ValueError(f"deployment {name}: the plan has an empty command line")

    def _check_name_free(self, name: str) -> None:
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

    def _new_deployment(self, request: DeployRequest) -> LocalDeployment:
        return LocalDeployment(self, request)

    def _launch(self, dep: LocalDeployment) -> None:
        with _live_lock:
            _live.add(dep)
        dep._start()

    def _forget(self, dep: DeploymentCore) -> None:
        super()._forget(dep)
        with _live_lock:
            _live.discard(dep)


class LocalDeployment(DeploymentCore):
    """One engine subprocess (see :class:`~backends.deploy.base.Deployment` for the contract)."""

    _backend: LocalBackend

    def __init__(self, backend: LocalBackend, request: DeployRequest) -> None:
        super().__init__(backend, request)
        self._argv = list(request.plan.argv)
        self._port = request.plan.port
        self._env = dict(request.env)
        self.workdir: Path | None = backend.state_dir / "work" / self.name if self.plan.files else None
        self._ports_left = backend.port_retries
        self._proc: procs.SpawnedProcess | None = None
        self._spawn_error: EngineFailure | None = None
        self._attempt_offset = 0
        # serializes a port retry's respawn against teardown from another thread
        self._lock = threading.Lock()

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
        clock = self._readiness(timeout_s, cancel)
        while True:
            clock.check_cancelled()
            if self._spawn_error is not None:
                raise self._with_tail(self._spawn_error)
            proc = self._proc
            assert proc is not None  # _start sets either _proc or _spawn_error
            ended = proc.exit_info()
            if ended is not None:
                if self._retry_on_new_port() or self._torn_down.is_set():
                    # a new attempt; or it exited because we stopped it: report the cancellation
                    continue
                raise self._failure_now(
                    "startup_crash", f"engine {self.name} {ended.describe()} before it was ready"
                )
            probe_timeout = clock.probe_timeout(self._backend.probe_timeout_s)
            if self._probe(self._backend.host, self._port, probe_timeout) and proc.alive():
                # alive *after* the probe too: else whatever else holds the port may have answered
                return
            if clock.expired():
                raise self._not_ready(clock, self._last_probe)
            clock.pause()

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and not self._torn_down.is_set() and proc.alive()

    def exit_info(self) -> ExitInfo | None:
        proc = self._proc
        if proc is None:
            return ExitInfo()
        return proc.exit_info()

    # ---------------------------------------------------------------------------- private

    def _release(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.stop(self._backend.grace_s, self._backend.kill_wait_s)
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)

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
            self._spawn_error = self._spawn_failure(exc)
            self._log_line(f"cannot start {self.name}: {self._spawn_error.message}")

    def _spawn_failure(self, exc: OSError) -> EngineFailure:
        """A program that is not there (or not executable) is the host's problem, not the
        configuration's: ``executable_missing``, retried once the engine is installed."""
        program = self._argv[0]
        detail = exc.strerror or str(exc)
        if isinstance(exc, (FileNotFoundError, PermissionError, NotADirectoryError)):
            where = "in the working directory" if self.workdir is not None else "on the daemon's PATH"
            path = self._env.get("PATH", "")
            return executable_missing(
                self.name,
                f"the program {program!r}",
                f"{detail}; looked {where}, PATH={path!r}",
                where="host",
            )
        return EngineFailure(
            "environment",
            f"engine {self.name} could not be started: {program}: {detail}",
            hint="the experiment is retried, not cached",
        )

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

    def _classify_text(self, tail: str) -> str:
        return self._attempt_log()

    def _attempt_log(self) -> str:
        """The log of the current attempt only (a retry must not see the previous attempt's error)."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(self._attempt_offset, size - _CLASSIFY_BYTES))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""


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
