"""GPU leases: disjoint under threads and across processes, FIFO, same model, contiguous ids."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backends.deploy.gpus import parse_fake_inventory
from backends.deploy.leases import GpuLeaser, InsufficientGpusError
from tests.contract.backend_contract import wait_for

REPO = Path(__file__).resolve().parents[3]


def leaser(inventory: str, lock_dir: Path | None = None) -> GpuLeaser:
    return GpuLeaser(parse_fake_inventory(inventory), lock_dir=lock_dir, poll_interval_s=0.02)


def test_zero_gpus_is_always_granted_even_without_gpus() -> None:
    for inventory in (GpuLeaser([]), leaser("1xH100")):
        lease = inventory.acquire(0, timeout=0)
        assert lease is not None and lease.ids == ()
        lease.release()


def test_more_gpus_than_the_host_has_fails_at_once() -> None:
    with pytest.raises(InsufficientGpusError, match=r"needs 4 GPU\(s\) but this host has 2x NVIDIA H100"):
        leaser("2xH100").acquire(4)
    with pytest.raises(InsufficientGpusError, match="no GPU") as info:
        GpuLeaser([]).acquire(1)
    assert info.value.hint is not None and "AUTOTUNER_FAKE_GPUS" in info.value.hint


def test_leases_are_disjoint_under_threads() -> None:
    gpus = leaser("8xH100")
    in_use: set[int] = set()
    guard = threading.Lock()
    overlaps: list[tuple[int, ...]] = []
    peak = [0]

    def worker(size: int) -> None:
        for _ in range(15):
            lease = gpus.acquire(size, timeout=30)
            assert lease is not None and len(lease.ids) == size
            with guard:
                if in_use & set(lease.ids):
                    overlaps.append(lease.ids)
                in_use.update(lease.ids)
                peak[0] = max(peak[0], len(in_use))
            time.sleep(0.001)
            with guard:
                in_use.difference_update(lease.ids)
            lease.release()

    threads = [threading.Thread(target=worker, args=(1 + i % 3,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert peak[0] > 3, "leases ran in parallel"
    assert gpus.in_use() == set()


def test_timeout_and_cancel_give_none() -> None:
    gpus = leaser("2xH100")
    held = gpus.acquire(2, timeout=0)
    assert held is not None
    assert gpus.acquire(1, timeout=0) is None
    started = time.monotonic()
    assert gpus.acquire(1, timeout=0.2) is None
    assert 0.2 <= time.monotonic() - started < 2
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    assert gpus.acquire(1, cancel=cancel) is None
    held.release()
    assert gpus.acquire(2, timeout=0) is not None


def test_waiters_are_served_in_arrival_order() -> None:
    gpus = leaser("4xH100")
    first = gpus.acquire(1, timeout=0)
    assert first is not None
    order: list[str] = []

    def take(label: str, size: int) -> None:
        lease = gpus.acquire(size, timeout=30)
        assert lease is not None
        order.append(label)
        time.sleep(0.05)
        lease.release()

    big = threading.Thread(target=take, args=("big", 4))
    big.start()
    assert wait_for(lambda: gpus.waiting() == 1, 5)  # the big request is queued first
    small = threading.Thread(target=take, args=("small", 1))
    small.start()
    assert wait_for(lambda: gpus.waiting() == 2, 5)
    time.sleep(0.1)
    assert order == [], "three GPUs are free, but the 1-GPU request waits behind the 4-GPU one"
    first.release()
    big.join()
    small.join()
    assert order == ["big", "small"]


def test_same_model_is_preferred_and_mixing_is_a_last_resort() -> None:
    gpus = leaser("2xA100,2xH100")
    one = gpus.acquire(1, timeout=0)
    assert one is not None and one.ids == (0,)
    pair = gpus.acquire(2, timeout=0)
    assert pair is not None and pair.ids == (2, 3), "not the mixed pair 1,2"
    assert gpus.acquire(2, timeout=0) is None, "an A100 and ... nothing: waits rather than mixing"

    mixed = leaser("1xA100,1xH100").acquire(2, timeout=0)
    assert mixed is not None and mixed.ids == (0, 1), "no model alone has two: mixing is the only way"


def test_contiguous_aligned_ids_first_then_any() -> None:
    gpus = leaser("4xH100")
    a = gpus.acquire(1, timeout=0)
    b = gpus.acquire(2, timeout=0)
    assert a is not None and b is not None
    assert (a.ids, b.ids) == ((0,), (2, 3)), "aligned pair, leaving 1 for another single"
    a.release()
    b.release()
    x, y, z = (gpus.acquire(1, timeout=0) for _ in range(3))
    assert x is not None and y is not None and z is not None
    y.release()
    w = gpus.acquire(2, timeout=0)
    assert w is not None and w.ids == (1, 3), "no contiguous pair left: any two"


def test_lease_is_a_context_manager_and_release_is_idempotent() -> None:
    gpus = leaser("2xH100")
    lease = gpus.acquire(2, timeout=0)
    assert lease is not None
    with lease:
        assert gpus.in_use() == {0, 1}
    assert lease.released and gpus.in_use() == set()
    lease.release()
    assert gpus.in_use() == set()


def test_two_leasers_sharing_a_lock_dir_never_share_a_gpu(tmp_path: Path) -> None:
    locks = tmp_path / "gpu-locks"
    daemon, run = leaser("4xH100", locks), leaser("4xH100", locks)
    a = daemon.acquire(2, timeout=0)
    b = run.acquire(2, timeout=0)
    assert a is not None and b is not None
    assert set(a.ids).isdisjoint(b.ids)
    assert run.acquire(1, timeout=0.1) is None
    held = (locks / f"{a.gpus[0].uuid}.lock").read_text()
    assert held.strip() == str(os.getpid()), "the lock file names its holder"
    a.release()
    c = run.acquire(2, timeout=1)
    assert c is not None and c.ids == a.ids


HOLDER = """
import sys
from pathlib import Path
from backends.deploy.gpus import parse_fake_inventory
from backends.deploy.leases import GpuLeaser
lease = GpuLeaser(parse_fake_inventory("2xH100"), lock_dir=Path(sys.argv[1])).acquire(2, timeout=10)
print(lease.ids, flush=True)
sys.stdin.read()
"""


def test_a_killed_process_never_leaves_a_gpu_locked(tmp_path: Path) -> None:
    locks = tmp_path / "gpu-locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(locks)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "(0, 1)"
        mine = leaser("2xH100", locks)
        assert mine.acquire(1, timeout=0.2) is None, "held by the other process"
        holder.kill()
        holder.wait()
        lease = mine.acquire(2, timeout=5)
        assert lease is not None and lease.ids == (0, 1), "the kernel dropped the dead holder's locks"
    finally:
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_duplicate_indices_are_rejected() -> None:
    gpus = parse_fake_inventory("2xH100")
    with pytest.raises(ValueError, match="distinct"):
        GpuLeaser([gpus[0], gpus[0]])
