"""Free TCP ports for engines: bound and released at once, never handed out twice in a row."""

from __future__ import annotations

import socket
import threading
from collections import deque

_recent_ports: deque[int] = deque(maxlen=256)
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now, not handed out recently by this process.

    The caller puts it into the engine's command line (the engine mapping needs the port to build
    its argv), so there is an unavoidable gap between this check and the engine's bind: another
    process may take the port meanwhile. The local backend detects that ("address already in
    use" in the log) and retries once on a fresh port. Remembering recent ports closes the
    in-process half of the race, where two experiments started together would otherwise often
    get the same number back from the kernel.
    """
    with _ports_lock:
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port: int = s.getsockname()[1]
            if port not in _recent_ports:
                _recent_ports.append(port)
                return port
    raise OSError(f"no free TCP port on {host} after 64 tries")
