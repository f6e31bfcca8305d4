"""The floor: what asyncio alone costs per streamed request and per SSE event on this machine.

A deliberately minimal HTTP/1.1 client (keep-alive connections, chunked bodies, one
``asyncio.Protocol`` per connection that parses SSE and JSON inside ``data_received``, no
coroutine wake-up per chunk) that understands exactly what ``stream_server.py`` sends and
nothing more: no TLS, no redirects, no error handling. It is *not* used by the product; the
benchmark runs it next to the load generator so the README can say how much of the load
generator's per-request and per-event cost is aiohttp's machinery and how much is Python's
event loop, which no HTTP library can remove.
"""

from __future__ import annotations

import asyncio
import json
import time
from json import JSONDecoder
from urllib.parse import urlsplit

_raw_decode = JSONDecoder().raw_decode
#: converts perf_counter() readings to wall-clock time, to compare with the server's x_sent_at
_WALL_OFFSET = time.time() - time.perf_counter()


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.sse = b""
        self.in_body = False
        self.done: asyncio.Future[None] | None = None
        self.times: list[float] = []
        self.lags: list[float] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def request(self, raw: bytes, times: list[float], lags: list[float] | None) -> asyncio.Future[None]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.times = times
        self.lags = lags
        self.buf = self.sse = b""
        self.in_body = False
        self.transport.write(raw)
        return self.done

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf + data if self.buf else data
        if not self.in_body:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                self.buf = buf
                return
            buf = buf[head_end + 4 :]
            self.in_body = True
        pos, payload, finished = 0, [], False
        while True:  # chunked transfer encoding
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(buf[pos:line_end], 16)
            if size == 0:
                finished = True
                break
            if len(buf) < line_end + 2 + size + 2:
                break
            payload.append(buf[line_end + 2 : line_end + 2 + size])
            pos = line_end + 2 + size + 2
        self.buf = b"" if finished else buf[pos:]
        if payload:
            self._events(b"".join(payload), now)
        if finished and self.done is not None:
            self.done.set_result(None)

    def _events(self, data: bytes, now: float) -> None:
        events = (self.sse + data).split(b"\n\n")
        self.sse = events.pop()
        for event in events:
            text = event[5:].decode().strip()
            if text == "[DONE]":
                continue
            obj, _ = _raw_decode(text)
            choices = obj.get("choices")
            if choices and choices[0].get("text"):
                self.times.append(now)
                sent = obj.get("x_sent_at")
                if self.lags is not None and sent:
                    self.lags.append(now + _WALL_OFFSET - sent)


async def run_floor(
    url: str,
    model: str,
    *,
    concurrency: int,
    requests: int,
    output_len: int,
    warmup: int = 0,
    lags: list[float] | None = None,
) -> dict[str, float]:
    """Closed loop like the load generator's; returns CPU microseconds per request and per event.

    ``warmup`` requests go first on the same connections, uncounted. With ``lags`` given, appends
    every content chunk's receive time minus its ``x_sent_at`` (seconds).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(_Connection, host, port)
        connections.append(protocol)
    body = json.dumps(
        {
            "model": model,
            "prompt": "hello " * 16,
            "max_tokens": output_len,
            "stream": True,
            "ignore_eos": True,
        }
    ).encode()
    raw = (
        b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (parts.netloc.encode(), len(body), body)
    )
    left = [warmup]
    events = [0]

    async def worker(conn: _Connection, record: list[float] | None) -> None:
        while left[0] > 0:
            left[0] -= 1
            times: list[float] = []
            await conn.request(raw, times, record)
            events[0] += len(times)

    await asyncio.gather(*(worker(c, None) for c in connections))
    left[0], events[0] = requests, 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(c, lags) for c in connections))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    for conn in connections:
        assert conn.transport is not None
        conn.transport.close()
    return {
        "requests_per_s": requests / wall,
        "events_per_s": events[0] / wall,
        "cpu_us_per_request": 1e6 * cpu / requests,
        "cpu_us_per_event": 1e6 * cpu / max(events[0], 1),
    }
