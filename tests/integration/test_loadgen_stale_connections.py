"""A server that closes its connection after every streamed answer while advertising keep-alive
(as llama.cpp's llama-server does): requests must not fail on the dead pooled connection."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

from backends.loadgen import TargetConfig, run_load_point, run_sync
from backends.workloads.synthetic import synthetic_requests


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length")), 0)
    if length:
        await reader.readexactly(length)
    if head.startswith(b"GET /v1/models"):
        body = json.dumps({"data": [{"id": "m"}]}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: keep-alive\r\n\r\n"
            + body
        )
    else:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: keep-alive\r\n\r\n"
        )
        events = [
            {"choices": [{"text": "a", "finish_reason": None}]},
            {"choices": [{"text": "b", "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        ]
        for event in [*(f"data: {json.dumps(e)}\n\n" for e in events), "data: [DONE]\n\n"]:
            data = event.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    writer.close()  # hang up, although the headers promised keep-alive


@pytest.fixture
def server() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        srv = await asyncio.start_server(_handle, "127.0.0.1", 0)
        holder["port"] = srv.sockets[0].getsockname()[1]
        holder["srv"] = srv
        started.set()
        async with srv:
            await srv.serve_forever()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    yield f"http://127.0.0.1:{holder['port']}"
    loop.call_soon_threadsafe(holder["srv"].close)  # type: ignore[attr-defined]
    thread.join(timeout=5)


def test_dead_keepalive_connections_are_retried(server: str) -> None:
    reqs = synthetic_requests(20, input_len=4, output_len=2, seed=0)
    point = run_sync(run_load_point(TargetConfig(base_url=server), reqs, concurrency=2))
    assert point.metrics["completed"] == 20, point.errors
    assert point.metrics["failed"] == 0
