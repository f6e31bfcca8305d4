"""Target URLs, request bodies, synthetic prompts and the receive clock."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from backends.loadgen import TargetConfig, normalize_base_url, run_sync
from backends.loadgen.clock import StampingSelector, receive_clock
from specs.errors import UserError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000"),
        (" https://api.example.com/serving/v1 ", "https://api.example.com/serving"),
    ],
)
def test_base_url_forms(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1:8000", "ftp://host", "http://", "http://host:99999", ""])
def test_bad_urls_are_user_errors(bad: str) -> None:
    with pytest.raises(UserError):
        normalize_base_url(bad)


def test_completion_body() -> None:
    target = TargetConfig("http://h:1/v1", ignore_eos=True, extra_body={"temperature": 0})
    assert target.endpoint == "http://h:1/v1/completions"
    body = json.loads(target.body("m", "hi there", 7))
    assert body == {
        "model": "m",
        "prompt": "hi there",
        "max_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "temperature": 0,
    }


def test_chat_body() -> None:
    target = TargetConfig("http://h:1", api="chat")
    assert target.endpoint == "http://h:1/v1/chat/completions"
    body = json.loads(target.body("m", "hi", 3))
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "ignore_eos" not in body
    assert body["stream_options"] == {"include_usage": True}


def test_unknown_api() -> None:
    with pytest.raises(UserError, match="unknown API"):
        TargetConfig("http://h:1", api="embeddings")  # type: ignore[arg-type]


def test_receive_clock_is_the_previous_select_on_the_stamping_loop() -> None:
    """Data read after a wake-up is stamped no later than the read and no earlier than its send."""

    async def probe() -> tuple[float, float, float]:
        stamp = receive_clock()
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        try:
            sent = time.perf_counter()
            b.send(b"x")
            await reader.read(1)
            stamped = stamp()
            now = time.perf_counter()
            return sent, stamped, now
        finally:
            writer.close()
            await writer.wait_closed()
            b.close()

    sent, stamped, now = run_sync(probe())
    assert sent <= stamped <= now


def test_receive_clock_falls_back_to_perf_counter_elsewhere() -> None:
    async def which() -> object:
        return receive_clock()

    assert asyncio.run(which()) is time.perf_counter
    with StampingSelector() as selector:
        before = selector.received_at()
        selector.select(0)
        assert selector.previous == before <= selector.current
