"""The spawner: one long-lived thread forks every engine (for the parent-death signal), each in
its own process group with its marker; :class:`SpawnedProcess` watches and stops it."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from backends.deploy.base import ExitInfo
from backends.deploy.procs.identity import (
    MARKER_ENV,
    PROC,
    live_group_members,
    marked_processes,
    read_identity,
    self_identity,
    stop_identities,
    wait_until,
)
from backends.deploy.procs.pidfiles import PidRecord, pid_file_path
from core import atomic
from core.clock import now

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_T = TypeVar("_T")


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has prctl
        return None
    return fn


# resolved once in the parent: the child runs between fork and exec and must do as little as possible
_PRCTL = _load_prctl()
_PDEATHSIG_ARGS = (
    ctypes.c_int(_PR_SET_PDEATHSIG),
    ctypes.c_ulong(signal.SIGKILL),
    ctypes.c_ulong(0),
    ctypes.c_ulong(0),
    ctypes.c_ulong(0),
)


class _Spawner:
    """One long-lived daemon thread that performs every fork, for the parent-death signal.

    ``PR_SET_PDEATHSIG`` fires when the thread that forked the child exits. Callers are
    experiment threads that come and go; this thread lives until the interpreter is gone, and is
    a daemon so that it never delays exit (at exit, ``atexit`` teardown has already run; what is
    left dies with us, which is the point).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = -1

    def call(self, fn: Callable[[], _T]) -> _T:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                # after a fork the thread is gone in the child: start a fresh one there
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._run, name="autotuner-spawner", daemon=True)
                self._pid = os.getpid()
                self._thread.start()
            thread, q = self._thread, self._queue
        if threading.current_thread() is thread:
            return fn()
        fut: Future[_T] = Future()
        q.put((fn, fut))
        return fut.result()

    def _run(self) -> None:
        q = self._queue
        while True:
            fn, fut = q.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller, which re-raises it
                fut.set_exception(exc)


_spawner = _Spawner()


def _child_setup(parent_pid: int) -> None:
    """Runs in the child between fork and exec (after ``setsid``): keep it tiny."""
    if _PRCTL is not None:
        _PRCTL(*_PDEATHSIG_ARGS)
        # the parent may have died before prctl took effect: then nobody will send the signal
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)


class SpawnedProcess:
    """A child in its own process group, with its pid file; :meth:`stop` ends all of it."""

    def __init__(self, popen: subprocess.Popen[bytes], record: PidRecord, pid_file: Path | None) -> None:
        self.popen = popen
        self.record = record
        self.pid_file = pid_file
        self.pid = popen.pid
        # start_new_session made the child a session and group leader
        self.pgid = popen.pid
        self.marker = record.marker
        self._exit: ExitInfo | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def exit_info(self) -> ExitInfo | None:
        """How the leader ended, or ``None`` while it runs. Never reaps it (see module docstring)."""
        if self._exit is not None:
            return self._exit
        if self.popen.returncode is not None:
            self._exit = _exit_from_returncode(self.popen.returncode)
            return self._exit
        try:
            res = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # reaped elsewhere (only our teardown should): the status is lost
            self._exit = ExitInfo()
            return self._exit
        if res is None:
            return None
        if res.si_code == os.CLD_EXITED:
            self._exit = ExitInfo(exit_code=res.si_status)
        else:
            self._exit = ExitInfo(signal=res.si_status)
        return self._exit

    def alive(self) -> bool:
        return self.exit_info() is None

    def stop(self, grace_s: float, kill_wait_s: float = 30.0) -> None:
        """SIGTERM the group, SIGKILL it after ``grace_s``, wait until every member is gone.

        Idempotent. Returns only when the group is empty (or ``kill_wait_s`` passed after the
        SIGKILL, logged as an error), because the caller releases the GPUs next.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._stop_group(grace_s, kill_wait_s)
                self._stop_escapees(kill_wait_s)
            finally:
                if self.pid_file is not None:
                    with contextlib.suppress(FileNotFoundError):
                        self.pid_file.unlink()

    def _group_alive(self) -> bool:
        if self.alive():
            return True
        return bool(live_group_members(self.pgid)) if PROC.is_dir() else False

    def _killpg(self, sig: int) -> None:
        # safe while the leader is unreaped: its zombie keeps the group id from being reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _stop_group(self, grace_s: float, kill_wait_s: float) -> None:
        if self._group_alive():
            self._killpg(signal.SIGTERM)
            if not wait_until(lambda: not self._group_alive(), grace_s):
                log.info("engine group %d ignored SIGTERM for %.1f s; sending SIGKILL", self.pgid, grace_s)
                self._killpg(signal.SIGKILL)
                if not wait_until(lambda: not self._group_alive(), kill_wait_s):
                    log.error("engine group %d survived SIGKILL for %.0f s", self.pgid, kill_wait_s)
        try:
            self.popen.wait(timeout=kill_wait_s)
        except subprocess.TimeoutExpired:
            log.error("engine %d could not be reaped", self.pid)
        if self._exit is None and self.popen.returncode is not None:
            self._exit = _exit_from_returncode(self.popen.returncode)

    def _stop_escapees(self, kill_wait_s: float) -> None:
        """Children that left the group (``setsid``) but still carry our marker."""
        if not PROC.is_dir():
            return
        pids = marked_processes().get(self.marker, [])
        idents = [i for i in (read_identity(p) for p in pids) if i is not None]
        if idents:
            log.info("stopping %d process(es) of engine %d outside its group", len(idents), self.pid)
            stop_identities(idents, 0.0, kill_wait_s)


def _exit_from_returncode(rc: int) -> ExitInfo:
    return ExitInfo(signal=-rc) if rc < 0 else ExitInfo(exit_code=rc)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    name: str,
    pid_dir: Path | None,
    labels: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> SpawnedProcess:
    """Start ``argv`` in its own session with ``env`` (complete, not merged), output to ``log_path``.

    The pid file ``pid_dir/<name>.json`` is written before the fork (with the marker, so that an
    orphan can be found even if we die right after forking) and completed after it. Raises
    ``OSError`` when the program cannot be started (e.g. ``FileNotFoundError``); the pid file is
    removed then.
    """
    marker = uuid.uuid4().hex
    record = PidRecord(
        name=name,
        marker=marker,
        owner=self_identity(),
        argv=list(argv),
        labels=dict(labels or {}),
        log_path=str(log_path),
        created_at=now(),
    )
    pid_file = pid_file_path(pid_dir, name) if pid_dir is not None else None
    if pid_file is not None:
        atomic.write_json(pid_file, record.to_dict())
    child_env = dict(env)
    child_env[MARKER_ENV] = marker
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent_pid = os.getpid()

    def _start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(
                list(argv),
                env=child_env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                # preexec_fn and threads: _child_setup only makes one prepared libc call
                preexec_fn=lambda: _child_setup(parent_pid),
            )

    try:
        popen = _spawner.call(_start)
    except BaseException:
        if pid_file is not None:
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
        raise
    ident = read_identity(popen.pid)
    record.pid = popen.pid
    record.pgid = popen.pid
    if ident is not None:
        record.start_time = ident.start_time
        record.boot_id = ident.boot_id
    if pid_file is not None:
        atomic.write_json(pid_file, record.to_dict())
    return SpawnedProcess(popen, record, pid_file)
