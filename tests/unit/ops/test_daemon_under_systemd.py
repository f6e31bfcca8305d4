"""``autotuner daemon`` as systemd runs it: notify socket, watchdog, journal stream, SIGTERM.

The test plays the service manager: it binds the notify socket, starts the real daemon on a
real git repository (no specs, so no engine runs) with ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``
and ``JOURNAL_STREAM`` set as ``Type=notify`` + ``WatchdogSec=`` + the journal would set them,
and checks the conversation: READY with a status line after the first sync, watchdog pings,
and on SIGTERM ``STOPPING=1``, a timeout extension, exit status 0, within the unit's
``TimeoutStopSec=``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
#: the unit's TimeoutStopSec=; the daemon must be gone well before it
TIMEOUT_STOP_S = 120


def _git(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=60)


@pytest.fixture
def specs_repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "specs-repo"
    (repo / "specs").mkdir(parents=True)
    (repo / "README.md").write_text("specs for the test\n")
    _git(["init", "-q", "-b", "main"], repo)
    _git(["add", "."], repo)
    _git(["commit", "-q", "-m", "init"], repo)
    return repo


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory(prefix="sdd-", dir="/tmp") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(60)
        try:
            yield sock, path
        finally:
            sock.close()


def test_daemon_speaks_the_notify_protocol(
    specs_repo: Path, notify_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    sock, path = notify_socket
    journal = open(tmp_path / "journal.log", "w+")  # noqa: SIM115 - closed below, after the process
    st = os.fstat(journal.fileno())
    env = {
        **os.environ,
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "4000000",
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        "PYTHONPATH": str(REPO),
        "HF_TOKEN": "hf_never_in_the_log_0123",
    }
    for name in ("WATCHDOG_PID", "AUTOTUNER_LOG_LEVEL"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "reconciler", "daemon", "--repo", str(specs_repo)]
    argv += ["--state-dir", str(tmp_path / "state"), "--no-push", "--interval", "30"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=journal, cwd=tmp_path)
    try:
        messages = [sock.recv(4096)]
        # before READY only STATUS or EXTEND_TIMEOUT_USEC lines may come
        while not messages[-1].startswith(b"READY=1"):
            assert messages[-1].startswith((b"STATUS=", b"EXTEND_TIMEOUT_USEC=")), messages
            messages.append(sock.recv(4096))
        ready = messages[-1]
        # pings follow, at least every WATCHDOG_USEC/2 = 2 s
        pings = [sock.recv(4096)]
        while pings[-1] != b"WATCHDOG=1" and len(pings) < 5:
            sock.settimeout(2.5)
            pings.append(sock.recv(4096))
        sock.settimeout(60)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        after: list[bytes] = []
        while not any(m.startswith(b"STOPPING=1") for m in after):
            after.append(sock.recv(4096))
        code = proc.wait(timeout=TIMEOUT_STOP_S)
        stop_s = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        journal.close()

    assert ready.startswith(b"READY=1\nSTATUS=rev "), ready
    assert b"WATCHDOG=1" in pings, pings
    assert code == 0
    assert stop_s < TIMEOUT_STOP_S / 2
    stopping = next(m for m in after if m.startswith(b"STOPPING=1"))
    assert stopping.startswith(b"STOPPING=1\nSTATUS="), stopping
    # the journal got priority-prefixed lines, one per event, and no secret
    lines = (tmp_path / "journal.log").read_text().splitlines()
    assert lines, "the daemon logged nothing"
    assert all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines
    assert not any("hf_never_in_the_log_0123" in line for line in lines)
