"""Process identity from ``/proc`` (start time + boot id), so that a recycled pid is never taken
for ours; group and marker scans; signals through a pidfd where the kernel has them."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

#: Environment variable carrying a deployment's marker; children inherit it.
MARKER_ENV = "AUTOTUNER_DEPLOYMENT_ID"
PROC = Path("/proc")
_T = TypeVar("_T")


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
        raw = (PROC / str(pid) / "stat").read_bytes()
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
            _boot_id_cache.append((PROC / "sys/kernel/random/boot_id").read_text().strip())
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


def self_identity() -> ProcessIdentity | None:
    pid = os.getpid()  # keyed by pid: a forked child is a different owner
    if pid not in _self_identity:
        _self_identity[pid] = read_identity(pid)
    return _self_identity[pid]


def _pids() -> Iterator[int]:
    try:
        names = os.listdir(PROC)
    except OSError:
        return
    for n in names:
        if n.isdigit():
            yield int(n)


def live_group_members(pgid: int) -> list[int]:
    members = []
    for pid in _pids():
        st = _read_stat(pid)
        if st is not None and st.pgrp == pgid and st.state not in ("Z", "X"):
            members.append(pid)
    return members


def marked_processes() -> dict[str, list[int]]:
    """marker -> live pids whose environment carries ``AUTOTUNER_DEPLOYMENT_ID=marker``."""
    key = MARKER_ENV.encode() + b"="
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for pid in _pids():
        if pid == me:
            continue
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
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


def stop_identities(targets: Sequence[ProcessIdentity], grace_s: float, kill_wait_s: float) -> None:
    """SIGTERM, wait up to ``grace_s``, SIGKILL the rest, wait up to ``kill_wait_s`` for them to go."""
    for ident in targets:
        _signal_verified(ident, signal.SIGTERM)
    if wait_until(lambda: not any(is_running(i) for i in targets), grace_s):
        return
    for ident in targets:
        _signal_verified(ident, signal.SIGKILL)
    if not wait_until(lambda: not any(is_running(i) for i in targets), kill_wait_s):
        left = [i.pid for i in targets if is_running(i)]
        log.error("processes %s survived SIGKILL for %.0f s (stuck in the kernel?)", left, kill_wait_s)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
