"""OpenAI request parsing and response formatting, without sockets."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from backends.sim.api import (
    CHAT_REPLY_PRIMING,
    CHAT_TOKENS_PER_MESSAGE,
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    ApiError,
    ResponseFormat,
    parse_generation,
)


def completion(body: dict[str, Any], max_model_len: int = 100) -> Any:
    return parse_generation(body, chat=False, served_model="m", max_model_len=max_model_len)


def chat(body: dict[str, Any], max_model_len: int = 100) -> Any:
    return parse_generation(body, chat=True, served_model="m", max_model_len=max_model_len)


def test_prompt_tokens_are_whitespace_separated_words() -> None:
    gen = completion({"prompt": "  the quick\nbrown\tfox ", "max_tokens": 3})
    assert gen.prompt_tokens == 4 and gen.max_tokens == 3
    assert completion({"prompt": [[1, 2, 3]], "max_tokens": 1}).prompt_tokens == 3
    assert completion({"prompt": ["a b"], "max_tokens": 1}).prompt_tokens == 2


def test_chat_prompt_tokens_add_a_template_overhead() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello there"}, {"type": "text", "text": "you"}],
        },
    ]
    gen = chat({"messages": messages})
    assert gen.prompt_tokens == 5 + 2 * CHAT_TOKENS_PER_MESSAGE + CHAT_REPLY_PRIMING


def test_max_tokens_defaults_like_vllm() -> None:
    assert completion({"prompt": "a b"}).max_tokens == COMPLETIONS_DEFAULT_MAX_TOKENS
    gen = chat({"messages": [{"role": "user", "content": "hi"}]}, max_model_len=50)
    assert gen.max_tokens == 50 - gen.prompt_tokens
    assert chat({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 7}).max_tokens == 7


def test_options_are_read() -> None:
    gen = completion(
        {
            "prompt": "x",
            "max_tokens": 9,
            "min_tokens": 4,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert (gen.min_tokens, gen.ignore_eos, gen.stream, gen.include_usage) == (4, True, True, True)
    assert completion({"prompt": "x", "seed": 1}).content_key != completion({"prompt": "x"}).content_key


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ([], 400, "JSON object"),
        ({"prompt": "x", "model": "other"}, 404, "The model `other` does not exist."),
        ({}, 400, "prompt is required"),
        ({"prompt": ["a", "b"]}, 400, "one prompt per request"),
        ({"prompt": "   "}, 400, "cannot be empty"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens must be at least 1"),
        ({"prompt": "x", "max_tokens": "9"}, 400, "max_tokens must be an integer"),
        (
            {"prompt": "x", "max_tokens": 100},
            400,
            "'max_tokens' or 'max_completion_tokens' is too large: 100",
        ),
        ({"prompt": " ".join(["w"] * 100)}, 400, "maximum context length is 100 tokens"),
        ({"prompt": "x", "n": 2}, 400, "n=1 only"),
        ({"prompt": "x", "stream": "yes"}, 400, "stream must be true or false"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(body: Any, status: int, fragment: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_generation(body, chat=False, served_model="m", max_model_len=100)
    assert info.value.status == status
    assert fragment in info.value.message
    error = info.value.body()["error"]
    assert error["code"] == status and error["message"] == info.value.message


def test_chat_content_must_be_text() -> None:
    with pytest.raises(ApiError, match="text parts only"):
        chat({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})
    with pytest.raises(ApiError, match="non-empty list"):
        chat({"messages": []})


def _events(sse: str) -> list[Any]:
    out = []
    for block in sse.split("\n\n"):
        if block:
            assert block.startswith("data: ")
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_completion_chunks_are_vllm_shaped_json() -> None:
    fmt = ResponseFormat("cmpl-1", 'model "quoted"', chat=False)
    events = _events(fmt.chunk(" a b", None) + fmt.chunk(" c", "length") + fmt.usage_chunk(3, 3) + fmt.DONE)
    first, last, usage, done = events
    assert first["object"] == "text_completion" and first["model"] == 'model "quoted"'
    assert first["system_fingerprint"] == "autotuner-sim"
    assert first["choices"][0]["text"] == " a b" and first["choices"][0]["finish_reason"] is None
    assert last["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 3,
        "total_tokens": 6,
        "completion_tokens": 3,
    }
    assert done == "[DONE]"


def test_chat_chunks_open_with_the_role() -> None:
    fmt = ResponseFormat("chatcmpl-1", "m", chat=True)
    role, content = _events(fmt.role_chunk() + fmt.chunk(" hi", "stop"))
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content["choices"][0]["delta"] == {"content": " hi"}
    assert content["choices"][0]["finish_reason"] == "stop"


def test_timestamps_are_added_when_asked() -> None:
    before = time.time()
    (event,) = _events(ResponseFormat("cmpl-1", "m", chat=False, emit_timestamps=True).chunk(" a"))
    assert before - 1 <= event["x_sent_at"] <= time.time() + 1
    (plain,) = _events(ResponseFormat("cmpl-1", "m", chat=False).chunk(" a"))
    assert "x_sent_at" not in plain


def test_non_streaming_bodies() -> None:
    body = ResponseFormat("chatcmpl-1", "m", chat=True).full(" a b", "stop", 5, 2)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": " a b"}
    assert body["usage"]["total_tokens"] == 7
    text = ResponseFormat("cmpl-1", "m", chat=False).full(" a", "length", 1, 1)
    assert text["choices"][0]["text"] == " a" and text["system_fingerprint"] == "autotuner-sim"
