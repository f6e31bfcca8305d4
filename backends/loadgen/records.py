"""What one request did, as measured on the client: the raw material of every metric.

A record holds timestamps, not derived latencies, so that the formulas live in exactly one
place (:mod:`backends.loadgen.aggregate`) and can be tested on hand-built records. All times are
seconds on one monotonic clock (``time.perf_counter``); only differences are meaningful.

A request either succeeded (``error is None``) or failed with one *kind* from
:data:`ERROR_KINDS`; failures are kept and counted, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: Every way a request can fail, with what it means. The kinds are the keys of
#: ``LoadPointRecord.errors``; ``http_<status>`` stands for any HTTP status other than 200.
ERROR_KINDS: Final[dict[str, str]] = {
    "connection": "could not connect (refused, unreachable, DNS)",
    "disconnected": "the connection was closed or reset before a response",
    "timeout": "no complete answer within the request timeout",
    "http_<status>": "the server answered with a non-200 HTTP status",
    "not_streaming": "the answer was not a text/event-stream",
    "invalid_json": "a streamed event was not valid JSON",
    "unexpected_chunk": "a streamed event was JSON but not an OpenAI completion chunk",
    "stream_error": "the server sent an error object inside the stream",
    "truncated_stream": "the stream ended, or the connection broke, before [DONE] or a finish_reason",
    "no_content": "the stream finished without a single content chunk (TTFT undefined)",
    "client_error": "another HTTP client error (see the record's detail)",
}


@dataclass(slots=True)
class RequestRecord:
    """One measured request.

    ``chunk_times`` are the receive times of the streamed events that carried content (text,
    or for chat a delta's content or reasoning), so ``chunk_times[0]`` is the first token and
    the gaps between them are the ITL samples. ``end_time`` is the receive time of the last byte
    that mattered ([DONE], or the final event when a server sends none), or the failure time.
    """

    #: position in the load point's request list (warm-up requests are numbered separately)
    index: int
    send_time: float
    end_time: float | None = None
    chunk_times: list[float] = field(default_factory=list)
    #: usage reported by the server (``prompt_tokens``, ``completion_tokens``); None if absent
    usage_input_tokens: int | None = None
    usage_output_tokens: int | None = None
    #: prompt tokens the server says came from its prefix cache (``prompt_tokens_details``)
    usage_cached_tokens: int | None = None
    #: input length known from the dataset, used when the server reports no usage
    expected_input_tokens: int | None = None
    error: str | None = None
    error_detail: str | None = None
    #: server-side send times (``x_sent_at``, wall clock) of the content chunks, when asked for
    server_sent_at: list[float] | None = None
    #: open loop: when the schedule said to send it (same clock as ``send_time``); the
    #: difference is the client's own lateness (``schedule_delay_*_ms``)
    scheduled_time: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def first_token_time(self) -> float | None:
        return self.chunk_times[0] if self.chunk_times else None

    @property
    def output_tokens(self) -> int:
        """Output tokens: the server's usage, else the number of content chunks."""
        if self.usage_output_tokens is not None:
            return self.usage_output_tokens
        return len(self.chunk_times)

    @property
    def input_tokens(self) -> int | None:
        if self.usage_input_tokens is not None:
            return self.usage_input_tokens
        return self.expected_input_tokens

    def fail(self, kind: str, detail: str | None, at: float) -> None:
        self.error = kind
        self.error_detail = detail[:300] if detail else detail
        self.end_time = at
