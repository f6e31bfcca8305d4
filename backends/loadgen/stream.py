"""One streamed request: the load generator's hot path.

Per read from the socket the work is: one receive stamp, one split of the buffer into SSE
events, and per event one JSON decode and a few dict lookups. Nothing is logged, no objects
are created beyond the parsed chunk, and the receive stamp is taken before any parsing (see
:mod:`backends.loadgen.clock`). All events that arrived in one read share its stamp: they did
arrive together.

The request in four steps, one function each: sending it and checking the response head
(:func:`_exchange`, :func:`_accepted`), reading the SSE events of the body (:class:`_Events`:
framing, JSON, what a chunk counts as), the verdict at the end of the body
(:meth:`_Events.finish`), and the classification of a transport failure (:func:`_classify`).

**The per-chunk cost is the client's own lag** at 256 streams (one loop parses every stream's
chunk of an engine step in turn; benchmarks/loadgen), so the path is kept short where it runs
once per chunk: the request's timeout is one ``asyncio.timeout`` around the whole exchange, not
aiohttp's ``total`` timeout, which enters and leaves a timer context (a task lookup and two list
operations) on every ``readany()``; the per-chunk state lives in one ``__slots__`` object whose
attributes are read into locals once per socket read; a chunk's text is looked up inline.

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
from json.scanner import make_scanner
from typing import Any

import aiohttp
import yarl

from backends.loadgen.records import RequestRecord

#: the JSON decoder's own scanner (C): ``(value, end)`` of the value at an index, StopIteration if
#: there is none; what ``json.loads`` runs after two Python frames, on a str (a third cheaper per
#: event than on bytes)
_scan = make_scanner(JSONDecoder())  # type: ignore[arg-type]  # typeshed: context is the decoder
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


def _bad_json(payload: bytes) -> _StreamFailure:
    return _StreamFailure("invalid_json", _show(payload))


def _usage(rec: RequestRecord, usage: dict[str, Any]) -> None:
    """Token counts from a ``usage`` object (the last one a stream sends wins); a count that is
    not an integer is not a count."""
    n_out = usage.get("completion_tokens")
    n_in = usage.get("prompt_tokens")
    rec.usage_output_tokens = n_out if type(n_out) is int else None
    rec.usage_input_tokens = n_in if type(n_in) is int else None
    details = usage.get("prompt_tokens_details")
    if details:
        n_cached = details.get("cached_tokens")
        rec.usage_cached_tokens = n_cached if type(n_cached) is int else None


class _Events:
    """The SSE events of one response body, fed read by read (see the module docstring for what
    counts as what)."""

    __slots__ = ("buf", "chat", "done", "finished", "last", "rec", "sent_at", "started")

    def __init__(self, rec: RequestRecord, chat: bool, server_timestamps: bool) -> None:
        self.rec = rec
        self.chat = chat
        self.sent_at: list[float] | None = [] if server_timestamps else None
        rec.server_sent_at = self.sent_at
        self.buf = b""
        #: ``data: [DONE]`` seen
        self.done = False
        #: a ``finish_reason`` seen (some servers send no [DONE])
        self.finished = False
        #: receive time of the last read: the end of a complete stream, the time of a bad event
        self.last = rec.send_time
        #: the response head arrived (a failure after it cuts a stream; before it, nothing was sent back)
        self.started = False

    def feed(self, data: bytes, t: float) -> None:
        """One read's bytes, received at ``t``; raises :class:`_StreamFailure` for a bad event."""
        self.last = t
        if self.buf:
            data = self.buf + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self.buf = events.pop()
        for event in events:
            if event.startswith(b"data:") and b"\n" not in event:
                payload = event[5:]
            else:
                joined = _payload(event)
                if joined is None:  # a comment, or an event without data
                    continue
                payload = joined
            # decoded inline, by the C scanner itself (no raw_decode frame): this runs per chunk
            try:
                text = payload.decode().strip()
            except UnicodeDecodeError:
                raise _bad_json(payload) from None
            if text == "[DONE]":
                self.done = True
                return
            try:
                obj, end = _scan(text, 0)
            except (StopIteration, ValueError):
                raise _bad_json(payload) from None
            if end != len(text):  # extra data after the JSON value
                raise _bad_json(payload)
            self._chunk(obj, payload, t)

    def _chunk(self, obj: Any, payload: bytes, t: float) -> None:
        try:
            choices = obj.get("choices")
            if choices:
                choice = choices[0]
                if self.chat:
                    delta = choice.get("delta")
                    text = delta and (
                        delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                    )
                else:
                    text = choice.get("text")
                if text:
                    self.rec.chunk_times.append(t)
                    if self.sent_at is not None:
                        self.sent_at.append(obj.get("x_sent_at") or 0.0)
                if choice.get("finish_reason"):
                    self.finished = True
            usage = obj.get("usage")
            if usage:
                _usage(self.rec, usage)
            error = obj.get("error")
        except (AttributeError, TypeError, KeyError, IndexError):
            raise _StreamFailure("unexpected_chunk", _show(payload)) from None
        if error or obj.get("object") == "error":
            raise _StreamFailure("stream_error", str(error or obj.get("message"))[:300])

    def finish(self) -> None:
        """The body ended: a complete stream with content, or a counted failure."""
        rec = self.rec
        if not (self.done or self.finished):
            rec.fail("truncated_stream", "the stream ended before [DONE] or a finish_reason", self.last)
        elif not rec.chunk_times:
            rec.fail("no_content", "the stream finished without a content chunk", self.last)
        else:
            rec.end_time = self.last


async def _accepted(resp: aiohttp.ClientResponse, rec: RequestRecord) -> bool:
    """Is this a 200 event stream? If not, the record fails with what the server said."""
    if resp.status != 200:
        text = (await resp.content.read(2000)).decode("utf-8", "replace")
        rec.fail(f"http_{resp.status}", text.strip() or resp.reason or "", time.perf_counter())
        return False
    ctype = resp.headers.get("Content-Type", "")
    if "text/event-stream" not in ctype:
        text = (await resp.content.read(300)).decode("utf-8", "replace")
        rec.fail("not_streaming", f"Content-Type {ctype!r}: {text}", time.perf_counter())
        return False
    return True


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read the chunked-encoding terminator after [DONE], so the connection can be reused."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


async def _exchange(
    session: aiohttp.ClientSession,
    url: yarl.URL,
    body: bytes,
    events: _Events,
    stamp: Callable[[], float],
) -> bool:
    """Send the request and read its events; False when the response head already failed it."""
    rec = events.rec
    async with session.post(url, data=body, trace_request_ctx=rec) as resp:
        events.started = True
        if not await _accepted(resp, rec):
            return False
        content = resp.content
        read = content.readany
        feed = events.feed
        while not events.done:
            data = await read()
            if not data:
                break
            feed(data, stamp())
        if events.done and not content.at_eof():
            await _drain(content)
    return True


def _classify(exc: BaseException, started: bool) -> tuple[str, str]:
    """The error kind and detail of a transport failure (the order of the checks matters: the
    aiohttp exceptions subclass each other and OSError)."""
    if isinstance(exc, TimeoutError):
        return "timeout", "no complete answer within the request timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection", str(exc)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        # a reset or close after the headers cuts the stream; before them, the server hung up
        return ("truncated_stream" if started else "disconnected"), str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientError):
        return "client_error", f"{type(exc).__name__}: {exc}"
    return "connection", f"{type(exc).__name__}: {exc}"


def _stale(exc: BaseException, started: bool) -> bool:
    """A pooled keep-alive connection the server had already closed (nothing was received); a
    refused connection (ClientConnectorError, itself a ClientOSError) is never stale."""
    return (
        not started
        and isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
        and not isinstance(exc, aiohttp.ClientConnectorError)
    )


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
    timeout_s: float | None = None,
) -> None:
    """Send one request and fill ``rec`` with what happened; never raises for server faults.

    ``timeout_s`` bounds each attempt from send to last byte (a ``timeout`` error kind).
    ``stale_retries``: a pooled keep-alive connection that the server had already closed fails
    before anything is sent back (llama.cpp's ``llama-server`` closes after each stream while
    advertising keep-alive); such a request is sent again on another connection, up to this many
    times, with its send time reset. Nothing had been received, so nothing is measured twice.
    """
    retries = stale_retries
    while True:
        rec.send_time = time.perf_counter()
        events = _Events(rec, chat, server_timestamps)
        try:
            async with asyncio.timeout(timeout_s):
                complete = await _exchange(session, url, body, events, stamp)
        except _StreamFailure as exc:
            rec.fail(exc.kind, exc.detail, events.last)
            return
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if retries > 0 and _stale(exc, events.started):
                retries -= 1
                continue
            kind, detail = _classify(exc, events.started)
            rec.fail(kind, detail, time.perf_counter())
            return
        if complete:
            events.finish()
        return
