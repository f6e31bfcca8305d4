"""The process layer's pure parts: identities, pid files, log tails, port rewriting."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from backends.deploy import procs
from backends.deploy.local import rewrite_port
from core import atomic


def test_identity_of_this_process_and_a_recycled_pid() -> None:
    me = procs.read_identity(os.getpid())
    assert me is not None and procs.is_running(me)
    assert not procs.is_running(procs.ProcessIdentity(me.pid, me.start_time + 1, me.boot_id))
    assert not procs.is_running(procs.ProcessIdentity(me.pid, me.start_time, "another-boot"))


def test_exited_process_is_not_running() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    assert procs.read_identity(p.pid) is None


def test_pid_record_round_trip(tmp_path: Path) -> None:
    me = procs.read_identity(os.getpid())
    record = procs.PidRecord(
        name="e1",
        marker="m",
        owner=me,
        argv=["vllm", "serve"],
        labels={"a": "b"},
        pid=10,
        pgid=10,
        start_time=5,
    )
    path = procs.pid_file_path(tmp_path, "e1")
    atomic.write_json(path, record.to_dict())
    assert procs.read_pid_files(tmp_path) == [(path, record)]
    (tmp_path / "broken.json").write_text("[]")
    assert procs.read_pid_file(tmp_path / "broken.json") is None


def test_cleanup_of_an_empty_or_missing_dir_is_a_no_op(tmp_path: Path) -> None:
    assert procs.cleanup_orphans(tmp_path / "missing") == []
    assert procs.cleanup_orphans(tmp_path) == []


def test_read_tail_last_lines_progress_bars_and_cut_lines(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "Loading: 10%\rLoading: 50%\rLoading: 100%\n")
    assert procs.read_tail(log, 3) == "line 98\nline 99\nLoading: 100%"
    assert procs.read_tail(log, 0) == ""
    assert procs.read_tail(tmp_path / "missing.log", 5) == ""
    # the last 52 bytes start inside "line 98": that cut line is dropped, not shown half
    assert procs.read_tail(log, 1000, max_bytes=52) == "line 99\nLoading: 100%"


def test_rewrite_port() -> None:
    assert rewrite_port(["vllm", "serve", "m", "--port", "8000"], 8000, 9000) == [
        "vllm",
        "serve",
        "m",
        "--port",
        "9000",
    ]
    assert rewrite_port(["llama-server", "--port=8000"], 8000, 9000) == ["llama-server", "--port=9000"]
    assert rewrite_port(["engine", "--other", "8000"], 8000, 9000) is None, "only the --port flag"
    assert rewrite_port(["e", "--port", "8000", "--port", "8000"], 8000, 9000) is None, "ambiguous"


def test_free_port_returns_distinct_ports() -> None:
    assert len({procs.free_port() for _ in range(10)}) == 10
