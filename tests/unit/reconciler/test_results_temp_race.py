"""``ResultsStore.ensure`` removes temp files left by a crashed process, never another thread's
write in flight (that race made ``status.json``'s rename fail and killed the daemon, issue 10)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from reconciler.results import ResultsStore


def test_ensure_keeps_a_temp_file_of_this_process_and_removes_an_old_one(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "x")
    store.ensure()
    fresh = store.dir / ".status.json.abc.tmp"
    fresh.write_bytes(b"{}")
    old = store.dir / ".status.json.old.tmp"
    old.write_bytes(b"{}")
    past = time.time() - 3600
    os.utime(old, (past, past))
    store.ensure()
    assert fresh.exists()
    assert not old.exists()


def test_status_writes_race_with_ensure_without_error(tmp_path: Path) -> None:
    writer, sweeper = ResultsStore(tmp_path, "x"), ResultsStore(tmp_path, "x")
    writer.ensure()
    errors: list[BaseException] = []
    stop = threading.Event()

    def sweep() -> None:
        while not stop.is_set():
            sweeper.ensure()

    thread = threading.Thread(target=sweep)
    thread.start()
    try:
        from core.atomic import write_bytes

        for i in range(80):
            try:
                write_bytes(writer.status_path, f'{{"n": {i}}}\n'.encode())
            except FileNotFoundError as exc:
                errors.append(exc)
                break
    finally:
        stop.set()
        thread.join()
    assert not errors
