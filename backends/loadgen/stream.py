"""One streamed request: the load generator's hot path.

Per read from the socket the work is: one receive stamp, one split of the buffer into SSE
events, and per event one ``json.loads`` and a few dict lookups. Nothing is logged, no objects
are created beyond the parsed chunk, and the receive stamp is taken before any parsing (see
:mod:`backends.loadgen.clock`). All events that arrived in one read share its stamp: they did
arrive together.

What counts as what:

* a *content chunk* is an event whose first choice carries non-empty ``text`` (completions) or
  ``delta.content`` / ``delta.reasoning_content`` / ``delta.reasoning`` (chat); role-only and
  usage-only events are not tokens;
* the stream is complete at ``data: [DONE]``, or at end of body when a ``finish_reason`` was
  seen (some servers send no [DONE]); any other end is a truncated stream;
* usage comes from the last event that carries a ``usage`` object (``stream_options.
  include_usage``); without one the record keeps ``None`` and the aggregation falls back to
  counting content chunks, and says so.

Every failure becomes a counted error kind on the record (:data:`records.ERROR_KINDS`); only
bugs escape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from json import JSONDecoder
from typing import Any

import aiohttp
import yarl

from backends.loadgen.records import RequestRecord

_raw_decode = JSONDecoder().raw_decode
_DRAIN_S = 1.0


async def _body_sent(
    session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestChunkSentParams
) -> None:
    """The request's send time is when its body goes to the socket, not when it was handed to
    aiohttp: the client library's own work before that (request object, connection pool, header
    encoding: 0.3-1.4 ms on a loaded 2-core machine, benchmarks/loadgen) is not the server's."""
    rec = ctx.trace_request_ctx
    if isinstance(rec, RequestRecord):
        rec.send_time = time.perf_counter()


def send_stamps() -> aiohttp.TraceConfig:
    """The trace hook every load generator session carries (see :func:`_body_sent`)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_body_sent)
    return trace


class _StreamFailure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _payload(event: bytes) -> bytes | None:
    """The ``data:`` payload of a multi-line SSE event (lines joined), None for comments etc."""
    lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _show(payload: bytes) -> str:
    return payload[:200].decode("utf-8", "replace")


def _text_of(choice: dict[str, Any], chat: bool) -> Any:
    if not chat:
        return choice.get("text")
    delta = choice.get("delta")
    if not delta:
        return None
    return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")


async def stream_request(
    session: aiohttp.ClientSession,
    url: yarl.URL,
    body: bytes,
    rec: RequestRecord,
    *,
    chat: bool,
    stamp: Callable[[], float],
    server_timestamps: bool = False,
    stale_retries: int = 2,
) -> None:
    """Send one request and fill ``rec`` with what happened; never raises for server faults.

    ``stale_retries``: a pooled keep-alive connection that the server had already closed fails
    before anything is sent back (llama.cpp's ``llama-server`` closes after each stream while
    advertising keep-alive); such a request is sent again on another connection, up to this many
    times, with its send time reset. Nothing had been received, so nothing is measured twice.
    """
    perf = time.perf_counter
    started = False
    chunk_times = rec.chunk_times
    sent_at: list[float] | None = [] if server_timestamps else None
    rec.server_sent_at = sent_at
    rec.send_time = perf()
    last = rec.send_time
    try:
        async with session.post(url, data=body, trace_request_ctx=rec) as resp:
            started = True
            if resp.status != 200:
                text = (await resp.content.read(2000)).decode("utf-8", "replace")
                rec.fail(f"http_{resp.status}", text.strip() or resp.reason or "", perf())
                return
            ctype = resp.headers.get("Content-Type", "")
            if "text/event-stream" not in ctype:
                text = (await resp.content.read(300)).decode("utf-8", "replace")
                rec.fail("not_streaming", f"Content-Type {ctype!r}: {text}", perf())
                return
            content = resp.content
            buf = b""
            done = False
            finished = False
            while not done:
                data = await content.readany()
                if not data:
                    break
                t = stamp()
                last = t
                if buf:
                    data = buf + data
                if b"\r" in data:
                    data = data.replace(b"\r\n", b"\n")
                events = data.split(b"\n\n")
                buf = events.pop()
                for event in events:
                    payload: bytes | None
                    if event.startswith(b"data:") and b"\n" not in event:
                        payload = event[5:]
                    else:
                        payload = _payload(event)
                    if payload is None:
                        continue
                    # str + raw_decode: a third cheaper than json.loads(bytes) per event
                    try:
                        text = payload.decode().strip()
                        if text == "[DONE]":
                            done = True
                            break
                        obj, end = _raw_decode(text)
                        if end != len(text):
                            raise ValueError("extra data after the JSON value")
                    except ValueError:
                        raise _StreamFailure("invalid_json", _show(payload)) from None
                    try:
                        choices = obj.get("choices")
                        if choices:
                            choice = choices[0]
                            if _text_of(choice, chat):
                                chunk_times.append(t)
                                if sent_at is not None:
                                    sent_at.append(obj.get("x_sent_at") or 0.0)
                            if choice.get("finish_reason"):
                                finished = True
                        usage = obj.get("usage")
                        if usage:
                            n_out = usage.get("completion_tokens")
                            n_in = usage.get("prompt_tokens")
                            rec.usage_output_tokens = n_out if type(n_out) is int else None
                            rec.usage_input_tokens = n_in if type(n_in) is int else None
                            details = usage.get("prompt_tokens_details")
                            if details:
                                n_cached = details.get("cached_tokens")
                                rec.usage_cached_tokens = n_cached if type(n_cached) is int else None
                        error = obj.get("error")
                    except (AttributeError, TypeError, KeyError, IndexError):
                        raise _StreamFailure("unexpected_chunk", _show(payload)) from None
                    if error or obj.get("object") == "error":
                        raise _StreamFailure("stream_error", str(error or obj.get("message"))[:300])
            if done and not content.at_eof():
                # read the chunked-encoding terminator so the connection can be reused
                try:
                    async with asyncio.timeout(_DRAIN_S):
                        while await content.readany():
                            pass
                except (TimeoutError, aiohttp.ClientError):
                    pass
    except _StreamFailure as exc:
        rec.fail(exc.kind, exc.detail, last)
        return
    except TimeoutError:
        rec.fail("timeout", "no complete answer within the request timeout", perf())
        return
    except aiohttp.ClientConnectorError as exc:
        rec.fail("connection", str(exc), perf())
        return
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        # (a refused connection is a ClientConnectorError, handled above: never retried)
        stale = isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
        if not started and stale_retries > 0 and stale:
            await stream_request(
                session,
                url,
                body,
                rec,
                chat=chat,
                stamp=stamp,
                server_timestamps=server_timestamps,
                stale_retries=stale_retries - 1,
            )
            return
        # a reset or close after the headers cuts the stream; before them, the server hung up
        rec.fail("truncated_stream" if started else "disconnected", str(exc) or type(exc).__name__, perf())
        return
    except aiohttp.ClientError as exc:
        rec.fail("client_error", f"{type(exc).__name__}: {exc}", perf())
        return
    except OSError as exc:
        rec.fail("connection", f"{type(exc).__name__}: {exc}", perf())
        return
    if not (done or finished):
        rec.fail("truncated_stream", "the stream ended before [DONE] or a finish_reason", last)
        return
    if not chunk_times:
        rec.fail("no_content", "the stream finished without a content chunk", last)
        return
    rec.end_time = last
