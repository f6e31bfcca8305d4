"""The sd_notify protocol over real AF_UNIX datagram sockets, checked byte for byte.

The test plays systemd's part: it binds the socket that ``$NOTIFY_SOCKET`` names, and reads
what the daemon's :class:`~reconciler.sdnotify.Notifier` sends. One test runs the notifier
in a separate process and checks the sender's pid from the kernel's credentials, which is
what ``NotifyAccess=main`` judges messages by.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sdnotify import Notifier

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def manager() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket at a filesystem path, as systemd would have it.

    Under /tmp rather than pytest's tmp_path: a socket path is limited to 108 bytes.
    """
    with tempfile.TemporaryDirectory(prefix="sdn-", dir="/tmp") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        try:
            yield sock, path
        finally:
            sock.close()


def _nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_ready_with_status_is_one_datagram(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    env = {"NOTIFY_SOCKET": path}
    notifier = Notifier(env)
    assert notifier.enabled
    assert notifier.ready("rev 1a2b3c4d: 2 spec(s)")
    assert sock.recv(4096) == b"READY=1\nSTATUS=rev 1a2b3c4d: 2 spec(s)"
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"


def test_every_message_kind(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(env)
    assert notifier.status("syncing")
    assert notifier.watchdog()
    assert notifier.stopping("tearing down 2 engines")
    assert notifier.extend_timeout(90)
    assert notifier.extend_timeout(0.25)
    assert notifier.stopping()
    assert [sock.recv(4096) for _ in range(6)] == [
        b"STATUS=syncing",
        b"WATCHDOG=1",
        b"STOPPING=1\nSTATUS=tearing down 2 engines",
        b"EXTEND_TIMEOUT_USEC=90000000",
        b"EXTEND_TIMEOUT_USEC=250000",
        b"STOPPING=1",
    ]


def test_abstract_namespace_socket() -> None:
    name = f"autotuner-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
        assert "@" + name in repr(notifier)


def test_status_stays_one_assignment(manager: tuple[socket.socket, str]) -> None:
    """A newline in STATUS would smuggle in another assignment (``READY=1``!)."""
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.status("sync failing: fatal: could not read\nREADY=1")
    assert sock.recv(4096) == b"STATUS=sync failing: fatal: could not read READY=1"
    notifier.status("x" * 5000)
    data = sock.recv(8192)
    assert data.startswith(b"STATUS=xxx") and data.endswith(b"...")
    assert len(data) <= len("STATUS=") + 1024
    notifier.status("étape 2/3 — ok")
    assert sock.recv(4096) == "STATUS=étape 2/3 — ok".encode()


def test_watchdog_settings() -> None:
    mine = {"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(dict(mine))
    assert notifier.watchdog_timeout() == 120.0
    assert notifier.watchdog_interval() == 60.0
    # no WATCHDOG_PID: the watchdog is ours (older systemd, or a manager that omits it)
    assert Notifier({"WATCHDOG_USEC": "3000000"}).watchdog_interval() == 1.5
    # inherited from a parent: not ours to feed
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_timeout() is None


def test_bad_watchdog_value_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reconciler.sdnotify"):
        assert Notifier({"WATCHDOG_USEC": "2min"}).watchdog_interval() is None
    assert "WATCHDOG_USEC='2min'" in caplog.text


def test_watchdog_not_ours_sends_nothing(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog() is False
    unarmed = Notifier({"NOTIFY_SOCKET": path})
    assert unarmed.watchdog() is False
    assert _nothing_waiting(sock)


def test_reads_then_unsets_the_environment(manager: tuple[socket.socket, str]) -> None:
    _, path = manager
    env = {
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "5000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/bin",
    }
    notifier = Notifier(env)
    assert env == {"PATH": "/bin"}
    assert notifier.enabled and notifier.watchdog_timeout() == 5.0
    kept = {"NOTIFY_SOCKET": path}
    Notifier(kept, unset_environment=False)
    assert kept == {"NOTIFY_SOCKET": path}


def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.extend_timeout(10) is False


def test_unusable_address_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reconciler.sdnotify"):
        notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert "vsock:2:1234" in caplog.text


def test_send_errors_never_raise_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    """systemd gone (the socket vanished): the daemon goes on, and says so once."""
    missing = f"/tmp/sdn-missing-{uuid.uuid4().hex}/notify"
    notifier = Notifier({"NOTIFY_SOCKET": missing})
    with caplog.at_level(logging.DEBUG, logger="reconciler.sdnotify"):
        assert notifier.ready() is False
        assert notifier.status("a") is False
        assert notifier.watchdog() is False  # not armed: nothing even tried
        assert notifier.stopping() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    debugs = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(warnings) == 1 and missing in warnings[0].getMessage()
    assert len(debugs) == 2


def test_manager_restarting_in_between(manager: tuple[socket.socket, str]) -> None:
    """The socket is looked up per message: systemd re-binding it (daemon-reexec) is harmless."""
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.status("one")
    assert sock.recv(4096) == b"STATUS=one"
    os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
        again.bind(path)
        again.settimeout(5)
        assert notifier.status("two")
        assert again.recv(4096) == b"STATUS=two"


_CHILD = textwrap.dedent(
    """
    import os, subprocess, sys
    from reconciler.sdnotify import Notifier

    notifier = Notifier()
    # an engine started after the notifier: it must not see the variables
    leaked = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('NOTIFY_SOCKET', '-'), "
         "os.environ.get('WATCHDOG_USEC', '-'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    notifier.ready(f"engine env: {leaked}")
    notifier.watchdog()
    notifier.stopping()
    """
)


def test_daemon_process_notifies_and_engines_inherit_nothing(manager: tuple[socket.socket, str]) -> None:
    """The whole exchange as systemd sees it: from another process, with its credentials."""
    sock, path = manager
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "PYTHONPATH": str(REPO)}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stderr=subprocess.PIPE, text=True)
    try:
        received = []
        for _ in range(3):
            data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
            creds = [
                d
                for level, kind, d in ancdata
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
            ]
            assert creds, "the kernel attaches the sender's credentials when SO_PASSCRED is on"
            pid, uid, _gid = struct.unpack("3i", creds[0][: struct.calcsize("3i")])
            received.append((data, pid, uid))
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert [d for d, _, _ in received] == [b"READY=1\nSTATUS=engine env: - -", b"WATCHDOG=1", b"STOPPING=1"]
    # every message comes from the daemon's own pid: NotifyAccess=main accepts it
    assert {pid for _, pid, _ in received} == {proc.pid}
    assert {uid for _, _, uid in received} == {os.getuid()}
