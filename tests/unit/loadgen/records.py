"""Hand-built request records for the formula tests: times in seconds from an arbitrary origin."""

from __future__ import annotations

from backends.loadgen import RequestRecord


def ok(
    send: float,
    chunks: list[float],
    end: float | None = None,
    *,
    out: int | None = None,
    inp: int | None = 10,
    index: int = 0,
    expected_input: int | None = None,
) -> RequestRecord:
    """A successful request: sent at ``send``, content chunks at ``chunks``, last byte at ``end``
    (default: the last chunk), usage ``out`` output and ``inp`` input tokens (None = not reported)."""
    return RequestRecord(
        index=index,
        send_time=send,
        end_time=chunks[-1] if end is None else end,
        chunk_times=list(chunks),
        usage_output_tokens=out,
        usage_input_tokens=inp,
        expected_input_tokens=expected_input,
    )


def failed(
    send: float, at: float, kind: str = "http_500", *, chunks: list[float] | None = None
) -> RequestRecord:
    rec = RequestRecord(index=0, send_time=send, chunk_times=list(chunks or []))
    rec.fail(kind, "injected", at)
    return rec
