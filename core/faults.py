"""Crash and fault points for the crash-safety tests: ``AUTOTUNER_CRASH_AT=NAME[:N]`` makes the process
SIGKILL itself the N-th time (default first) it passes the point called NAME.

This is how the tests prove "kill -9 anywhere loses nothing" at the exact moments that matter
(between writing a temp file and renaming it, between writing a record and telling Optuna),
which a kill from outside would hit only by luck. Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_counts: dict[str, int] = {}
_lock = threading.Lock()


def crash_point(name: str) -> None:
    wanted = os.environ.get("AUTOTUNER_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        hit = _counts[name] == int(nth or 1)
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


class InjectedFault(RuntimeError):
    """Raised by :func:`fault_point`: a bug, simulated, to prove a crash is contained and shown."""


def fault_point(name: str) -> None:
    """``AUTOTUNER_FAULT_AT=NAME[:N]`` raises :class:`InjectedFault` the N-th time (default first)
    the thread passes the point NAME: an uncaught exception where a real bug would raise one."""
    wanted = os.environ.get("AUTOTUNER_FAULT_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    with _lock:
        key = "fault:" + name
        _counts[key] = _counts.get(key, 0) + 1
        hit = _counts[key] == int(nth or 1)
    if hit:
        raise InjectedFault(f"injected fault at {name} (AUTOTUNER_FAULT_AT)")
