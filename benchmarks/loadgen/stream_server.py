"""A deliberately cheap OpenAI-style streaming server for measuring the load generator itself.

To find the *client's* ceiling the server must cost less than the client per chunk, so this is
raw asyncio (no HTTP framework): it parses just enough HTTP/1.1 (request line, headers,
``Content-Length`` body, keep-alive), and every chunk is one pre-built byte string with the
token index and the send time patched in. It behaves like a batched engine: one ticker emits
one token to *every* active stream per step, then waits ``--itl-ms`` (0 = zero model cost:
only one event-loop turn between steps). Each chunk carries ``"x_sent_at": time.time()`` taken
right before its write, like the sim engine with ``--emit-timestamps``.

Run: ``python benchmarks/loadgen/stream_server.py --port 0 --itl-ms 20``; it prints
``LISTENING <port>`` on stdout when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_CHUNK_PREFIX = b'data: {"object":"text_completion","model":"bench","choices":[{"index":0,"text":" tok",'
_USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}\n\n'
#: the [DONE] event as one HTTP chunk (14 = 0xe bytes), then the end of the chunked body
_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
_MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()


def _frame(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class _Stream:
    __slots__ = ("left", "n_in", "n_out", "transport")

    def __init__(self, transport: asyncio.Transport, n_out: int, n_in: int) -> None:
        self.transport = transport
        self.left = n_out
        self.n_out = n_out
        self.n_in = n_in


class Engine:
    """The batch of active streams and the ticker that feeds them."""

    def __init__(self, itl_s: float, ttft_s: float) -> None:
        self.itl_s = itl_s
        self.ttft_s = ttft_s
        self.active: list[_Stream] = []
        self.wake = asyncio.Event()

    def add(self, stream: _Stream) -> None:
        if self.ttft_s:
            asyncio.get_running_loop().call_later(self.ttft_s, self._join, stream)
        else:
            self._join(stream)

    def _join(self, stream: _Stream) -> None:
        self.active.append(stream)
        self.wake.set()

    async def run(self) -> None:
        clock = time.time
        while True:
            if not self.active:
                self.wake.clear()
                await self.wake.wait()
            batch, self.active = self.active, []
            for s in batch:
                if s.transport.is_closing():
                    continue
                s.left -= 1
                finish = b'"length"' if s.left == 0 else b"null"
                payload = b'%s"finish_reason":%s}],"x_sent_at":%.6f}\n\n' % (_CHUNK_PREFIX, finish, clock())
                if s.left:
                    s.transport.write(_frame(payload))
                    self.active.append(s)
                else:
                    usage = _USAGE % (s.n_in, s.n_out)
                    s.transport.write(_frame(payload) + _frame(usage) + _DONE)
            await asyncio.sleep(self.itl_s)


class ExactEngine:
    """``--exact``: every stream on its own timer, so the server's timing is known exactly: the
    first token ``ttft`` after the request was parsed, then one every ``itl``, each scheduled
    with ``call_at`` on a fixed grid (no shared ticker, whose phase would add 0..itl to TTFT).
    Each chunk carries ``x_sent_at`` and ``x_late_ms``, how late the server's own loop was."""

    def __init__(self, itl_s: float, ttft_s: float) -> None:
        self.itl_s = itl_s
        self.ttft_s = ttft_s

    def add(self, stream: _Stream) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        loop.call_at(t0 + self.ttft_s, self._emit, stream, t0 + self.ttft_s)

    def _emit(self, s: _Stream, due: float) -> None:
        if s.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        late_ms = (loop.time() - due) * 1000
        s.left -= 1
        finish = b'"length"' if s.left == 0 else b"null"
        payload = b'%s"finish_reason":%s}],"x_sent_at":%.6f,"x_late_ms":%.3f}\n\n' % (
            _CHUNK_PREFIX,
            finish,
            time.time(),
            late_ms,
        )
        if s.left:
            s.transport.write(_frame(payload))
            loop.call_at(due + self.itl_s, self._emit, s, due + self.itl_s)
        else:
            s.transport.write(_frame(payload) + _frame(_USAGE % (s.n_in, s.n_out)) + _DONE)

    async def run(self) -> None:
        await asyncio.Event().wait()


class _Http(asyncio.Protocol):
    def __init__(self, engine: Engine | ExactEngine) -> None:
        self.engine = engine
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self._handle(head[0], body)

    def _handle(self, request_line: str, body: bytes) -> None:
        assert self.transport is not None
        method, path = request_line.split(" ")[:2]
        if method == "GET" and path == "/v1/models":
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(_MODELS), _MODELS)
            )
            return
        if method != "POST" or not path.endswith("completions"):
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        req: dict[str, Any] = json.loads(body)
        prompt = req.get("prompt") or req["messages"][-1]["content"]
        self.transport.write(_HEAD)
        self.engine.add(_Stream(self.transport, max(1, int(req["max_tokens"])), len(str(prompt).split())))


async def serve(host: str, port: int, itl_s: float, ttft_s: float, exact: bool = False) -> None:
    engine: Engine | ExactEngine = ExactEngine(itl_s, ttft_s) if exact else Engine(itl_s, ttft_s)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(engine), host, port, backlog=4096)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    await engine.run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--itl-ms", type=float, default=0.0, help="time between decode steps (0 = zero cost)")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="delay before a new stream joins the batch")
    p.add_argument("--exact", action="store_true", help="per-stream timers: TTFT and ITL exactly as given")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.itl_ms / 1000, args.ttft_ms / 1000, args.exact))
    return 0


if __name__ == "__main__":
    sys.exit(main())
