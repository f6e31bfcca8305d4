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


def _hit(variable: str, name: str, key: str) -> bool:
    """``variable`` names the point ``name`` (``NAME[:N]``) and this is its N-th pass."""
    wanted = os.environ.get(variable)
    if not wanted:
        return False
    point, _, nth = wanted.partition(":")
    if point != name:
        return False
    with _lock:
        _counts[key] = _counts.get(key, 0) + 1
        return _counts[key] == int(nth or 1)


def crash_point(name: str) -> None:
    if _hit("AUTOTUNER_CRASH_AT", name, name):
        os.kill(os.getpid(), signal.SIGKILL)


class InjectedFault(RuntimeError):
    """Raised by :func:`fault_point`: a bug, simulated, to prove a crash is contained and shown."""


def fault_point(name: str) -> None:
    """``AUTOTUNER_FAULT_AT=NAME[:N]`` raises :class:`InjectedFault` the N-th time (default first)
    the thread passes the point NAME: an uncaught exception where a real bug would raise one."""
    if _hit("AUTOTUNER_FAULT_AT", name, "fault:" + name):
        raise InjectedFault(f"injected fault at {name} (AUTOTUNER_FAULT_AT)")
