"""The one place that spawns processes, and the one that finds and stops them again.

Everything an engine process needs to be started *and to never outlive us* is here:

* **Own process group.** Engines are started with ``start_new_session=True``: the engine and
  every child it forks (vLLM's workers, a tokenizer pool) share a process group, so teardown
  signals the whole group at once, and a Ctrl-C in the tool's terminal does not reach the
  engine behind our back (we tear it down ourselves, in order).
* **Parent-death signal.** On Linux the child asks the kernel, before ``exec``, to send it
  ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so even ``kill -9`` of the
  tool leaves no engine running. The kernel sends it when the parent *thread* that forked the
  child exits, not the process. An engine deployed from a short-lived worker thread would be
  killed when that thread ends, so every spawn is handed to one long-lived daemon thread
  (:class:`_Spawner`) that lives exactly as long as the process.
* **Pid files and a marker.** Each engine gets a random marker in its environment
  (``AUTOTUNER_DEPLOYMENT_ID``), inherited by all of its children, and a pid file (written
  atomically *before* the spawn, completed after) holding the marker, pid, process group,
  start time, boot id and the owner's identity. After a crash of the owner,
  :func:`cleanup_orphans` finds what is left by marker (also grandchildren that the parent-death
  signal cannot reach, since it covers the direct child only), and never kills a process that
  merely reuses a recorded pid: a pid counts as ours only if its start time and boot id match,
  or its environment carries our marker; signals go through a pidfd where the kernel has them,
  so the check and the kill cannot race.
* **No early reaping.** The engine's exit is observed with ``waitid(WNOWAIT)``, which leaves it
  a zombie until teardown ends. A zombie leader keeps its pid, and so its process-group id,
  from being reused, which makes ``killpg`` of that group safe at every step of the teardown.
* **Secrets.** Environment values are passed to the child only. Pid files hold the argv (which
  is recorded in results anyway) and labels, never the environment.

Linux is the target (systemd hosts, containers). Elsewhere the parent-death signal, ``/proc``
identity checks and marker scans are skipped, and teardown falls back to signalling the group
while its leader lives.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from backends.deploy.base import ExitInfo
from core import atomic
from core.clock import now

__all__ = [
    "MARKER_ENV",
    "PidRecord",
    "ProcessIdentity",
    "SpawnedProcess",
    "cleanup_orphans",
    "free_port",
    "is_running",
    "read_identity",
    "read_pid_file",
    "read_pid_files",
    "read_tail",
    "spawn",
]

log = logging.getLogger(__name__)

#: Environment variable carrying a deployment's marker; children inherit it.
MARKER_ENV = "AUTOTUNER_DEPLOYMENT_ID"
PID_FILE_SCHEMA = 1
_PROC = Path("/proc")
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


# ------------------------------------------------------------------------------------------ ports

_recent_ports: deque[int] = deque(maxlen=256)
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now, not handed out recently by this process.

    The caller puts it into the engine's command line (the engine mapping needs the port to build
    its argv), so there is an unavoidable gap between this check and the engine's bind: another
    process may take the port meanwhile. The local backend detects that ("address already in
    use" in the log) and retries once on a fresh port. Remembering recent ports closes the
    in-process half of the race, where two experiments started together would otherwise often
    get the same number back from the kernel.
    """
    with _ports_lock:
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port: int = s.getsockname()[1]
            if port not in _recent_ports:
                _recent_ports.append(port)
                return port
    raise OSError(f"no free TCP port on {host} after 64 tries")


# --------------------------------------------------------------------------------- process identity


@dataclass(frozen=True)
class ProcessIdentity:
    """A pid plus what makes it unique over time: its start time since boot, and the boot."""

    pid: int
    start_time: int
    boot_id: str

    def to_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "startTime": self.start_time, "bootId": self.boot_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessIdentity:
        return cls(pid=int(data["pid"]), start_time=int(data["startTime"]), boot_id=str(data["bootId"]))


@dataclass(frozen=True)
class _Stat:
    state: str
    pgrp: int
    start_time: int


def _read_stat(pid: int) -> _Stat | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces and ')'
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return _Stat(state=rest[0].decode(), pgrp=int(rest[2]), start_time=int(rest[19]))
    except (IndexError, ValueError):
        return None


_boot_id_cache: list[str] = []


def _boot_id() -> str:
    if not _boot_id_cache:
        try:
            _boot_id_cache.append((_PROC / "sys/kernel/random/boot_id").read_text().strip())
        except OSError:
            _boot_id_cache.append("unknown")
    return _boot_id_cache[0]


def read_identity(pid: int) -> ProcessIdentity | None:
    """The identity of a live (or zombie) process, ``None`` if there is none or no ``/proc``."""
    st = _read_stat(pid)
    if st is None:
        return None
    return ProcessIdentity(pid=pid, start_time=st.start_time, boot_id=_boot_id())


def is_running(identity: ProcessIdentity) -> bool:
    """True if exactly this process (not a later one reusing its pid) runs and is not a zombie."""
    if identity.boot_id != _boot_id():
        return False
    st = _read_stat(identity.pid)
    return st is not None and st.start_time == identity.start_time and st.state not in ("Z", "X")


_self_identity: dict[int, ProcessIdentity | None] = {}


def _self() -> ProcessIdentity | None:
    pid = os.getpid()  # keyed by pid: a forked child is a different owner
    if pid not in _self_identity:
        _self_identity[pid] = read_identity(pid)
    return _self_identity[pid]


def _pids() -> Iterator[int]:
    try:
        names = os.listdir(_PROC)
    except OSError:
        return
    for n in names:
        if n.isdigit():
            yield int(n)


def _live_group_members(pgid: int) -> list[int]:
    members = []
    for pid in _pids():
        st = _read_stat(pid)
        if st is not None and st.pgrp == pgid and st.state not in ("Z", "X"):
            members.append(pid)
    return members


def _marked_processes() -> dict[str, list[int]]:
    """marker -> live pids whose environment carries ``AUTOTUNER_DEPLOYMENT_ID=marker``."""
    key = MARKER_ENV.encode() + b"="
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for pid in _pids():
        if pid == me:
            continue
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:  # another user's process, or gone meanwhile
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(key):
                st = _read_stat(pid)
                if st is not None and st.state not in ("Z", "X"):
                    found.setdefault(entry[len(key) :].decode(errors="replace"), []).append(pid)
                break
    return found


def _signal_verified(identity: ProcessIdentity, sig: int) -> bool:
    """Send ``sig`` to exactly this process; False if it is gone or its pid now names another.

    With a pidfd the identity check and the signal refer to the same process even if the pid is
    recycled in between; without one (old kernels) the window is a few microseconds.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is not None and send is not None:
        try:
            fd = pidfd_open(identity.pid)
        except OSError:
            return False
        try:
            if not is_running(identity):
                return False
            send(fd, sig)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
    if not is_running(identity):
        return False
    try:
        os.kill(identity.pid, sig)
    except OSError:
        return False
    return True


def _stop_identities(targets: Sequence[ProcessIdentity], grace_s: float, kill_wait_s: float) -> None:
    """SIGTERM, wait up to ``grace_s``, SIGKILL the rest, wait up to ``kill_wait_s`` for them to go."""
    for ident in targets:
        _signal_verified(ident, signal.SIGTERM)
    if _wait_until(lambda: not any(is_running(i) for i in targets), grace_s):
        return
    for ident in targets:
        _signal_verified(ident, signal.SIGKILL)
    if not _wait_until(lambda: not any(is_running(i) for i in targets), kill_wait_s):
        left = [i.pid for i in targets if is_running(i)]
        log.error("processes %s survived SIGKILL for %.0f s (stuck in the kernel?)", left, kill_wait_s)


def _wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


# ---------------------------------------------------------------------------------------- pid files


@dataclass
class PidRecord:
    """What a pid file holds. ``pid`` is ``None`` between the provisional write and the spawn."""

    name: str
    marker: str
    owner: ProcessIdentity | None
    argv: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    pgid: int | None = None
    start_time: int | None = None
    boot_id: str | None = None
    log_path: str | None = None
    created_at: str = ""

    def engine_identity(self) -> ProcessIdentity | None:
        if self.pid is None or self.start_time is None or self.boot_id is None:
            return None
        return ProcessIdentity(self.pid, self.start_time, self.boot_id)

    def to_dict(self) -> dict[str, object]:
        return {
            "schemaVersion": PID_FILE_SCHEMA,
            "name": self.name,
            "marker": self.marker,
            "owner": self.owner.to_dict() if self.owner else None,
            "argv": list(self.argv),
            "labels": dict(self.labels),
            "pid": self.pid,
            "pgid": self.pgid,
            "startTime": self.start_time,
            "bootId": self.boot_id,
            "logPath": self.log_path,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PidRecord:
        owner = data.get("owner")
        return cls(
            name=str(data["name"]),
            marker=str(data["marker"]),
            owner=ProcessIdentity.from_dict(owner) if owner else None,
            argv=[str(a) for a in data.get("argv", [])],
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            pid=data.get("pid"),
            pgid=data.get("pgid"),
            start_time=data.get("startTime"),
            boot_id=data.get("bootId"),
            log_path=data.get("logPath"),
            created_at=str(data.get("createdAt", "")),
        )


def pid_file_path(pid_dir: Path, name: str) -> Path:
    return pid_dir / f"{name}.json"


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in one pid file; ``None`` when it is unreadable or not one of ours."""
    try:
        return PidRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_pid_files(pid_dir: Path) -> list[tuple[Path, PidRecord | None]]:
    """Every pid file in ``pid_dir`` with its record (``None``: unreadable or not ours)."""
    if not pid_dir.is_dir():
        return []
    return [(path, read_pid_file(path)) for path in sorted(pid_dir.glob("*.json"))]


def _owner_alive(record: PidRecord) -> bool:
    return record.owner is not None and is_running(record.owner)


def cleanup_orphans(
    pid_dir: Path, *, names: Collection[str] | None = None, grace_s: float = 5.0, kill_wait_s: float = 30.0
) -> list[str]:
    """Stop what dead owners left behind in ``pid_dir``; return the names of deployments stopped.

    For every pid file whose owner process is gone (a crashed or ``kill -9``-ed daemon or
    ``run``), the engine's processes are found by marker in ``/proc/*/environ`` (this reaches
    children that left the group or outlived the leader) and by the recorded pid when its start
    time and boot id still match. They get SIGTERM, then SIGKILL after ``grace_s``. The pid file
    is then removed, also when nothing was running (a stale file, or a pid now used by an
    unrelated process, which is left alone). Pid files of live owners, this process included,
    are not touched: those deployments are not orphans. ``names`` limits the pass to those
    deployments.
    """
    stopped: list[str] = []
    if not _PROC.is_dir():
        # without /proc no owner can be told alive from dead: removing files could orphan a live run
        log.warning(
            "no /proc on this system: orphaned engines cannot be found; pid files left in %s", pid_dir
        )
        return stopped
    records = [(p, r) for p, r in read_pid_files(pid_dir) if names is None or p.stem in names]
    if not records:
        return stopped
    marked = _marked_processes()
    for path, record in records:
        if record is None:
            log.warning("removing unreadable pid file %s", path)
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if _owner_alive(record):
            continue
        targets: dict[int, ProcessIdentity] = {}
        for pid in marked.get(record.marker, []):
            ident = read_identity(pid)
            if ident is not None:
                targets[pid] = ident
        leader = record.engine_identity()
        if leader is not None and is_running(leader):
            targets[leader.pid] = leader
        if targets:
            log.warning(
                "stopping orphaned engine %s (pids %s) left by a previous run", record.name, sorted(targets)
            )
            _stop_identities(list(targets.values()), grace_s, kill_wait_s)
            stopped.append(record.name)
        with contextlib.suppress(OSError):
            path.unlink()
    _remove_stale_temp_files(pid_dir)
    return stopped


def _remove_stale_temp_files(pid_dir: Path, older_than_s: float = 60.0) -> None:
    """Temporary files a ``kill -9`` interrupted mid-write; young ones may be in use by a live writer."""
    now = time.time()
    for tmp in pid_dir.glob(f".*{atomic.TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()


# ------------------------------------------------------------------------------------------ spawner


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


# ----------------------------------------------------------------------------------- spawned process


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
        return bool(_live_group_members(self.pgid)) if _PROC.is_dir() else False

    def _killpg(self, sig: int) -> None:
        # safe while the leader is unreaped: its zombie keeps the group id from being reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _stop_group(self, grace_s: float, kill_wait_s: float) -> None:
        if self._group_alive():
            self._killpg(signal.SIGTERM)
            if not _wait_until(lambda: not self._group_alive(), grace_s):
                log.info("engine group %d ignored SIGTERM for %.1f s; sending SIGKILL", self.pgid, grace_s)
                self._killpg(signal.SIGKILL)
                if not _wait_until(lambda: not self._group_alive(), kill_wait_s):
                    log.error("engine group %d survived SIGKILL for %.0f s", self.pgid, kill_wait_s)
        try:
            self.popen.wait(timeout=kill_wait_s)
        except subprocess.TimeoutExpired:
            log.error("engine %d could not be reaped", self.pid)
        if self._exit is None and self.popen.returncode is not None:
            self._exit = _exit_from_returncode(self.popen.returncode)

    def _stop_escapees(self, kill_wait_s: float) -> None:
        """Children that left the group (``setsid``) but still carry our marker."""
        if not _PROC.is_dir():
            return
        pids = _marked_processes().get(self.marker, [])
        idents = [i for i in (read_identity(p) for p in pids) if i is not None]
        if idents:
            log.info("stopping %d process(es) of engine %d outside its group", len(idents), self.pid)
            _stop_identities(idents, 0.0, kill_wait_s)


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
        owner=_self(),
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


# -------------------------------------------------------------------------------------------- logs


def read_tail(path: Path, n_lines: int, *, max_bytes: int = 256 * 1024) -> str:
    """The last ``n_lines`` of a log file, reading at most ``max_bytes`` from its end.

    Carriage-return progress bars (``\\r``-separated redraws on one line) are reduced to their
    last state, so a tail of tqdm output is readable in a record.
    """
    if n_lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if start > 0 and len(lines) > 1:
        lines = lines[1:]  # the first line is cut
    if lines and lines[-1] == "":
        lines.pop()
    cleaned = []
    for line in lines[-n_lines:]:
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        cleaned.append(line)
    return "\n".join(cleaned)
