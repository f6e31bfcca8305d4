"""Talk to systemd's service manager: the ``sd_notify`` protocol, without libsystemd.

Why our own twenty lines instead of a dependency: the protocol is one ``AF_UNIX``/``SOCK_DGRAM``
datagram of newline-separated ``KEY=VALUE`` assignments sent to the socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract-namespace name written with a leading ``@``), and
the Python bindings (``systemd-python``, ``sdnotify``) either need libsystemd headers to build
or add nothing. The unit (``systemd/autotuner.service``, ``Type=notify``) relies on four
messages, sent by the daemon's reconcile loop:

* ``READY=1`` after the first successful sync, so ``systemctl start`` returns only once the
  daemon really works and units ordered ``After=autotuner.service`` start after that;
* ``STATUS=...`` one line that ``systemctl status`` shows (what the loop is doing now);
* ``WATCHDOG=1`` from the loop itself, never from a helper thread: a ping proves that the loop
  still turns, and ``WatchdogSec=`` restarts a daemon whose loop hangs;
* ``STOPPING=1`` on SIGTERM, then ``EXTEND_TIMEOUT_USEC=...`` while engines are torn down, so
  a slow teardown is not cut short by ``TimeoutStopSec=``.

Rules this module keeps:

* **Never raise.** Telling systemd is best effort; a daemon that crashes because its
  supervisor went away would be worse than one that stays silent. A failed send is logged
  once at WARNING (then at DEBUG) and reported as ``False``.
* **No-op without systemd.** With ``$NOTIFY_SOCKET`` unset (a terminal, a test, a container)
  every method does nothing and returns ``False``.
* **Children must not talk to systemd.** Engines are started by the daemon; they inherit its
  environment, and an engine that runs ``sd_notify`` itself (some do, through their own
  libraries) must not be able to mark *our* service ready or feed *our* watchdog. The unit
  says ``NotifyAccess=main`` so systemd would drop such messages anyway, with a log line each;
  by default the constructor also removes ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
  ``WATCHDOG_PID`` from the environment (as ``sd_notify(unset_environment=1)`` does) after
  reading them, so engines never see them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

#: systemd reads a notification into a buffer of this size and drops longer ones whole
#: (``NOTIFY_BUFFER_MAX`` = ``PIPE_BUF``, systemd's src/basic/def.h), so STATUS text is cut to fit
_MAX_DATAGRAM = 4096
_MAX_STATUS = 1024

#: the variables systemd sets for a notify service; all three are the service's own, not its
#: children's (see the module docstring)
_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str) -> str | None:
    """``$NOTIFY_SOCKET`` as an ``AF_UNIX`` address, or ``None`` when we cannot use it.

    A leading ``@`` names a Linux abstract-namespace socket, which the kernel addresses with
    a leading NUL byte. Other forms (``vsock:CID:PORT``, systemd 254+ for VMs) are not ours
    to support: the daemon runs on the host that runs systemd.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def _one_line(text: str) -> str:
    """A newline inside STATUS would start a new assignment: fold it, and cut to fit."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_STATUS else flat[: _MAX_STATUS - 3] + "..."


class Notifier:
    """The daemon's end of the ``sd_notify`` protocol.

    ``Notifier()`` reads ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` once,
    then (with ``unset_environment=True``, the default) removes them from ``environ`` so that
    processes started later do not inherit them. Pass ``environ`` to read another mapping (a
    test does). Every sending method returns ``True`` when the datagram was sent and
    ``False`` when it was not (no systemd, or a send error); none of them raises.

    Thread safety: the methods may be called from any thread; each call is one ``sendto``,
    which the kernel delivers whole or not at all.
    """

    def __init__(
        self,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = True,
    ) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or an @abstract name; not notifying systemd", raw)
        self._watchdog_usec = self._read_watchdog(env)
        if unset_environment:
            for name in _ENV_VARS:
                env.pop(name, None)
        self._warned = False

    @staticmethod
    def _read_watchdog(env: MutableMapping[str, str]) -> int | None:
        """``$WATCHDOG_USEC`` when the watchdog is meant for this process, else ``None``.

        ``$WATCHDOG_PID``, when set, names the process the watchdog belongs to; a process that
        inherited the variables (a child started before they were unset) must not ping.
        """
        usec = env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid.strip() != str(os.getpid()):
            return None
        try:
            value = int(usec)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer; not feeding the watchdog", usec)
            return None
        return value if value > 0 else None

    # -- state ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to talk to."""
        return self._address is not None

    def watchdog_timeout(self) -> float | None:
        """``WatchdogSec=`` in seconds, or ``None`` when no watchdog is armed for us."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1_000_000

    def watchdog_interval(self) -> float | None:
        """How often to call :meth:`watchdog`, in seconds: half the timeout, or ``None``.

        Half, as ``sd_watchdog_enabled(3)`` recommends, so that one late iteration of the loop
        (a slow git fetch, a busy disk) does not get the daemon killed. The loop should sleep
        at most this long between pings.
        """
        timeout = self.watchdog_timeout()
        return None if timeout is None else timeout / 2

    # -- messages ---------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (``READY=1``), optionally with a status line."""
        return self.send("READY=1", *self._status(status))

    def status(self, text: str) -> bool:
        """Set the one line ``systemctl status`` shows (``STATUS=...``)."""
        return self.send(*self._status(text))

    def watchdog(self) -> bool:
        """Feed the watchdog (``WATCHDOG=1``); a no-op when no watchdog is armed for us."""
        if self._watchdog_usec is None:
            return False
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (``STOPPING=1``), optionally with a status line."""
        return self.send("STOPPING=1", *self._status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd gives up (``EXTEND_TIMEOUT_USEC=...``).

        It applies to whichever timeout runs now: start-up before READY (a first clone of a
        big repository), shutdown after STOPPING (engines still freeing their GPUs). It is
        relative to *now*, not added up: send it again before it runs out.
        """
        usec = max(1, int(seconds * 1_000_000))
        return self.send(f"EXTEND_TIMEOUT_USEC={usec}")

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; the other methods' primitive."""
        if self._address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        if len(data) > _MAX_DATAGRAM:
            self._failed(f"message of {len(data)} bytes is longer than systemd accepts")
            return False
        try:
            # a socket per message, as sd_notify(3) does: nothing to close, nothing to leak,
            # and at one message a second the cost is nil. Python creates it close-on-exec.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, self._address)
        except OSError as exc:
            self._failed(str(exc))
            return False
        return True

    def _failed(self, reason: str) -> None:
        where = self._address.replace("\0", "@") if self._address else "?"
        # once at WARNING: a supervisor that went away must not flood the log every loop
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(level, "could not notify systemd at %s: %s", where, reason)

    def __repr__(self) -> str:
        where = self._address.replace("\0", "@") if self._address else None
        return f"Notifier(socket={where!r}, watchdog_usec={self._watchdog_usec})"
