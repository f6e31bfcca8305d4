"""A small OpenAI-compatible streaming server for the load generator's tests, with fault injection.

It is a real aiohttp server on 127.0.0.1 (port 0) in a background thread, so the load generator
under test talks to it over a real socket. A prompt chooses its fault with a ``#fault=KIND``
marker, which lets one load point mix good and broken requests:

``http500``, ``invalid_json``, ``close_mid`` (the connection is cut half way), ``hang`` (never
answers), ``no_usage``, ``no_done`` (finish_reason but no [DONE]), ``truncated_clean`` (a clean end
of body with neither), ``stream_error`` (an error object inside the stream), ``not_stream`` (plain
JSON), ``empty`` (no content chunk at all); and two legal framings that are easy to get wrong:
``crlf`` (CRLF line ends and SSE comment lines) and ``split`` (every event cut over three writes).

The server counts what it sees: requests in flight (and the most at once) and arrival times,
which the closed- and open-loop tests compare with what the client was asked to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

from aiohttp import web

MODEL = "test-model"


class FakeOpenAI:
    """Start with ``with FakeOpenAI(...) as server:``; ``server.url`` is the base URL."""

    def __init__(
        self,
        *,
        ttft_s: float = 0.0,
        ttft_per_in_flight_s: float = 0.0,
        itl_s: float = 0.0,
        tokens_per_chunk: int = 1,
        usage: bool = True,
        hang_s: float = 30.0,
    ) -> None:
        self.ttft_s = ttft_s
        self.ttft_per_in_flight_s = ttft_per_in_flight_s
        self.itl_s = itl_s
        self.tokens_per_chunk = tokens_per_chunk
        self.usage = usage
        self.hang_s = hang_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeOpenAI:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        # asyncio.Runner cancels handlers still running (a "hang" request) when it closes
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            runner.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/chat/completions", self._complete)
        runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        ready.set()
        await self._stop.wait()
        await runner.cleanup()

    # ------------------------------------------------------------------ handlers

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.perf_counter())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        except ConnectionResetError:
            # the client gave up (timeouts are part of the tests); nothing to answer any more
            return web.Response(status=499)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        fault = prompt.split("#fault=", 1)[1].split()[0] if "#fault=" in prompt else None
        early = await self._refuse(fault)
        if early is not None:
            return early
        return await self._stream(
            request, chat, fault, n_in=len(prompt.split()), n_out=int(body["max_tokens"])
        )

    async def _refuse(self, fault: str | None) -> web.StreamResponse | None:
        """The faults answered without a stream: an HTTP 500, a hang, a plain JSON answer."""
        if fault == "http500":
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        if fault == "hang":
            assert self._stop is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.hang_s)
            return web.Response(status=504)
        if fault == "not_stream":
            return web.json_response({"choices": [{"text": "hello", "finish_reason": "length"}]})
        return None

    async def _stream(
        self, request: web.Request, chat: bool, fault: str | None, *, n_in: int, n_out: int
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(obj: Any) -> None:
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            if fault == "crlf":
                await resp.write(b": keep-alive comment\r\n\r\ndata: " + data + b"\r\n\r\n")
            elif fault == "split":
                # one event over three writes (three HTTP chunks, often three TCP reads)
                event = b"data: " + data + b"\n\n"
                third = max(1, len(event) // 3)
                for piece in (event[:third], event[third : 2 * third], event[2 * third :]):
                    await resp.write(piece)
                    await asyncio.sleep(0.001)
            else:
                await resp.write(b"data: " + data + b"\n\n")

        # a server slowing down with load: what the capacity search has to find
        ttft = self.ttft_s + self.ttft_per_in_flight_s * self.in_flight
        if ttft:
            await asyncio.sleep(ttft)
        if chat:
            await send(_chat_chunk({"role": "assistant", "content": ""}, None))
        chunks = 0 if fault == "empty" else -(-n_out // self.tokens_per_chunk)
        for i in range(chunks):
            if i and self.itl_s:
                await asyncio.sleep(self.itl_s)
            if i == chunks // 2 and fault in ("invalid_json", "close_mid", "stream_error"):
                if fault == "invalid_json":
                    await send(b'{"choices": [{"text": "oops"')
                elif fault == "stream_error":
                    await send({"error": {"message": "injected error in stream", "code": 500}})
                else:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                break
            last = i == chunks - 1
            finish = "length" if last and fault != "truncated_clean" else None
            text = " tok" * self.tokens_per_chunk
            await send(_chat_chunk({"content": text}, finish) if chat else _text_chunk(text, finish))
        if self.usage and fault not in ("no_usage", "truncated_clean"):
            produced = 0 if fault == "empty" else n_out
            usage = {"prompt_tokens": n_in, "completion_tokens": produced, "total_tokens": n_in + produced}
            await send({"id": "x", "choices": [], "usage": usage})
        if fault not in ("no_done", "truncated_clean"):
            await send(b"[DONE]")
        await resp.write_eof()
        return resp


def _text_chunk(text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": MODEL,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


def _chat_chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


class Prompt:
    """A request in the shape the load generator accepts (like ``backends.workloads.RequestSpec``)."""

    def __init__(self, prompt: str, max_tokens: int, input_tokens: int | None = None) -> None:
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.input_tokens = input_tokens


def prompts(n: int, *, max_tokens: int = 8, fault_every: int = 0, fault: str = "") -> list[Prompt]:
    """``n`` prompts of 4 words; every ``fault_every``-th (1-based) carries ``#fault=fault``."""
    out = []
    for i in range(1, n + 1):
        text = f"hello there request {i}"
        if fault and fault_every and i % fault_every == 0:
            text += f" #fault={fault}"
        out.append(Prompt(text, max_tokens))
    return out
