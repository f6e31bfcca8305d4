"""GPU leases: parallel experiments get disjoint GPU sets, and so do separate processes.

The original system ran experiments one at a time with no GPU locking; ours runs them in parallel,
so two engines must never be given the same GPU. Two guards, for two scopes:

* **In the process** a :class:`GpuLeaser` hands out disjoint id sets under one condition
  variable. Waiters are served strictly in arrival order (FIFO): a 4-GPU experiment is never
  starved by a stream of 1-GPU ones, at the price of GPUs idling while it waits for the fourth.
* **Across processes** (two daemons, or a daemon and an ``autotuner run``, on one host) every
  leased GPU is also held with ``fcntl.flock`` on ``<lock_dir>/<gpu uuid>.lock``. The kernel
  drops a flock when its holder dies, even by ``kill -9``, so a crash can never leave a GPU
  locked and no stale-lock cleanup exists to get wrong. Lock files are never deleted (deleting
  a file another process is about to lock is the classic flock race); they hold the holder's
  pid, for humans. GPUs locked by another process are simply not free; since no notification
  crosses processes, waiters re-check every ``poll_interval_s``.

Choice of GPUs: same model first (a tensor-parallel group runs at the pace of its slowest
member), mixed models only when no single model has enough GPUs on the host at all; then
contiguous indices (neighbours usually share the fastest links), aligned to the group size so
that two 2-GPU experiments on four GPUs take 0-1 and 2-3 and leave no gap.

A request for 0 GPUs (CPU engines: sim, llamacpp) is granted at once with an empty lease; a
request for more GPUs than the host has fails at once with :class:`InsufficientGpusError`
instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from backends.deploy.gpus import FAKE_ENV, GpuInfo
from specs.errors import InsufficientGpusError

__all__ = ["GpuLeaser", "InsufficientGpusError", "Lease"]


class Lease:
    """A set of GPUs held for one experiment. Release it (or use it as a context manager)."""

    def __init__(
        self, gpus: Sequence[GpuInfo], leaser: GpuLeaser | None, lock_fds: Sequence[int] = ()
    ) -> None:
        self.gpus: tuple[GpuInfo, ...] = tuple(gpus)
        self._leaser = leaser
        self._lock_fds = list(lock_fds)
        self._released = False

    @property
    def ids(self) -> tuple[int, ...]:
        """The GPU indices, for ``CUDA_VISIBLE_DEVICES`` (via the deploy backend's ``gpu_ids``)."""
        return tuple(g.index for g in self.gpus)

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the GPUs back. Idempotent; call it only after the engine is torn down."""
        if self._leaser is not None:
            self._leaser._release(self)
        else:
            self._released = True

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease(ids={list(self.ids)}, released={self._released})"


class GpuLeaser:
    """Hands out disjoint GPU sets from ``gpus``; thread safe. See the module docstring.

    ``lock_dir`` (e.g. ``<state dir>/gpu-locks``) enables the cross-process guard; without it
    only this process's threads are kept apart (tests, or a host where this is the only user).
    """

    def __init__(
        self, gpus: Sequence[GpuInfo], *, lock_dir: Path | None = None, poll_interval_s: float = 0.2
    ) -> None:
        indices = [g.index for g in gpus]
        if len(set(indices)) != len(indices):
            raise ValueError(f"GPU indices must be distinct, got {indices}")
        self.gpus: tuple[GpuInfo, ...] = tuple(sorted(gpus, key=lambda g: g.index))
        self.lock_dir = lock_dir
        self.poll_interval_s = poll_interval_s
        self._held: set[int] = set()
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._model_totals = Counter(g.model for g in self.gpus)
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True)

    # -------------------------------------------------------------------------------- public

    def acquire(
        self, count: int, *, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> Lease | None:
        """Wait for ``count`` free GPUs and lease them; ``None`` on timeout or cancel.

        ``timeout=None`` waits until granted or cancelled; ``timeout=0`` tries once.
        """
        if count < 0:
            raise ValueError(f"cannot lease {count} GPUs")
        if count == 0:
            return Lease((), None)
        if count > len(self.gpus):
            raise InsufficientGpusError(
                f"this experiment needs {count} GPU(s) but this host has {self.describe()}",
                hint=self._shortage_hint(),
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        return None
                    if self._queue[0] is ticket:
                        lease = self._take(count)
                        if lease is not None:
                            return lease
                    wait = self.poll_interval_s
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return None
                        wait = min(wait, remaining)
                    self._cond.wait(wait)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def describe(self) -> str:
        if not self.gpus:
            return "no GPU"
        counts = Counter(g.name for g in self.gpus)
        return ", ".join(f"{n}x {name}" for name, n in counts.items())

    def waiting(self) -> int:
        """Requests queued for GPUs now (for status and progress output)."""
        with self._cond:
            return len(self._queue)

    def in_use(self) -> set[int]:
        """Indices leased by this process now."""
        with self._cond:
            return set(self._held)

    # ------------------------------------------------------------------------------- private

    def _shortage_hint(self) -> str:
        if not self.gpus:
            return (
                "no NVIDIA GPU was found (no driver, or pynvml missing: pip install 'autotuner[nvml]'); "
                f"to test scheduling without GPUs set {FAKE_ENV}, e.g. {FAKE_ENV}=4xH100"
            )
        return "lower the tensor/pipeline parallel sizes in the spec, or run it on a larger host"

    def _take(self, count: int) -> Lease | None:
        """Pick and lock ``count`` GPUs now, or ``None``. Called with the condition held."""
        free = [g for g in self.gpus if g.index not in self._held]
        if len(free) < count:
            return None
        fds: dict[int, int] = {}
        if self.lock_dir is not None:
            lockable = []
            for g in free:
                fd = self._try_lock(g)
                if fd is not None:
                    fds[g.index] = fd
                    lockable.append(g)
            free = lockable
        chosen = self._choose(free, count)
        chosen_ids = {g.index for g in chosen} if chosen is not None else set()
        for index, fd in fds.items():
            if index not in chosen_ids:
                _unlock(fd)
        if chosen is None:
            return None
        self._held.update(chosen_ids)
        return Lease(chosen, self, [fds[g.index] for g in chosen if g.index in fds])

    def _choose(self, free: Sequence[GpuInfo], count: int) -> list[GpuInfo] | None:
        if len(free) < count:
            return None
        models = [m for m, total in self._model_totals.items() if total >= count]
        if models:
            groups = [[g for g in free if g.model == m] for m in models]
        else:
            groups = [list(free)]  # no model alone is big enough: mixing is the only way
        best: tuple[tuple[bool, bool, int], list[GpuInfo]] | None = None
        for group in groups:
            if len(group) < count:
                continue
            for candidate in _candidates(group, count):
                first = candidate[0].index
                contiguous = candidate[-1].index - first == count - 1
                key = (not contiguous, first % count != 0, first)
                if best is None or key < best[0]:
                    best = (key, candidate)
        return best[1] if best is not None else None

    def _try_lock(self, gpu: GpuInfo) -> int | None:
        assert self.lock_dir is not None
        path = self.lock_dir / f"{gpu.uuid}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _release(self, lease: Lease) -> None:
        with self._cond:
            if lease._released:
                return
            lease._released = True
            for fd in lease._lock_fds:
                _unlock(fd)
            lease._lock_fds = []
            self._held.difference_update(lease.ids)
            self._cond.notify_all()


def _candidates(group: Sequence[GpuInfo], count: int) -> list[list[GpuInfo]]:
    """Every window of ``count`` consecutive free GPUs of a group, and the lowest ``count`` as fallback."""
    ordered = sorted(group, key=lambda g: g.index)
    windows = [ordered[i : i + count] for i in range(len(ordered) - count + 1)]
    return [w for w in windows if w[-1].index - w[0].index == count - 1] + [ordered[:count]]


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)
