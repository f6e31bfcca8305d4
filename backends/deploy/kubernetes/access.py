"""Reaching the engine in its pod: the Service's DNS name, a port-forward, or the pod IP.

``service`` when the daemon runs in the cluster (the Service's DNS name), ``portForward`` when
it runs outside (a local listener whose every connection is a ``portforward`` stream of the API
server, :class:`PortForwarder`), ``podIP`` on flat networks. ``auto`` picks the first two by
where the daemon runs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Any

from backends.deploy.kubernetes.api import Api

__all__ = ["PortForwarder", "engine_url"]

log = logging.getLogger(__name__)

#: ``kubernetes.stream`` patches the client it streams on while it sets a stream up (see below)
_STREAM_LOCK = threading.Lock()


def engine_url(access: str, *, name: str, namespace: str, port: int, pod_ip: str | None) -> str:
    """The engine's URL for ``service`` and ``podIP`` access (``portForward`` has its own)."""
    if access == "service":
        return f"http://{name}.{namespace}.svc:{port}"
    return f"http://{pod_ip or '0.0.0.0'}:{port}"


class PortForwarder:
    """``kubectl port-forward`` in-process: a listener on 127.0.0.1 whose every connection is piped
    through the API server's ``pods/portforward`` subresource (``kubernetes.stream.portforward``).

    ``kubernetes.stream.portforward`` works by swapping the ``call_api`` of the ``ApiClient``
    behind the method it is given for the duration of the call: on the shared client, every
    other thread's request in that window would go out as a WebSocket (and fail). So streams
    use a client of their own, one stream set up at a time (:data:`_STREAM_LOCK`).
    """

    def __init__(self, api: Api, pod: str, namespace: str, port: int) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(client.ApiClient(configuration=api.api_client.configuration))
        self._pod = pod
        self._ns = namespace
        self._port = port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.local_port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name=f"k8s-forward-{pod}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    def _pipe(self, conn: socket.socket) -> None:
        from kubernetes.stream import portforward

        try:
            with _STREAM_LOCK:
                pf = portforward(
                    self._core.connect_get_namespaced_pod_portforward,
                    self._pod,
                    self._ns,
                    ports=str(self._port),
                )
            remote = pf.socket(self._port)
        except Exception as exc:
            log.warning("port-forward to %s/%s:%d failed: %s", self._ns, self._pod, self._port, exc)
            conn.close()
            return
        t = threading.Thread(target=_copy, args=(remote, conn), daemon=True)
        t.start()
        _copy(conn, remote)
        t.join(5)
        conn.close()
        remote.close()
        # the client's proxy thread leaves the WebSocket's socket open when the server closes
        # first (close() is a no-op once it is no longer "connected"); shutdown() closes it
        with contextlib.suppress(Exception):
            pf.websocket.shutdown()


def _copy(src: Any, dst: Any) -> None:
    """One direction of a forwarded connection, until either side closes."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
