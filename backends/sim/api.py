"""The OpenAI-compatible surface: parse request bodies, format responses and SSE chunks.

Kept apart from the server so that it can be tested without sockets, and so that the wire format
is in one place. The format follows vLLM's OpenAI server: ``data: {json}\\n\\n`` chunks, a last
content chunk that carries ``finish_reason``, an optional usage chunk with empty ``choices``
(``stream_options.include_usage``), then ``data: [DONE]``; errors as
``{"error": {"message", "type", "param", "code"}}``.

Streamed chunks are assembled from pre-rendered pieces rather than ``json.dumps`` per chunk:
at hundreds of streams the formatting is a measurable share of the simulator's CPU, and the
only variable parts (the output text, made of plain ASCII words, and the timestamp) need no
escaping.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

FINGERPRINT = "autotuner-sim"
#: tokens a chat template adds: per message (start, role, end) and to prime the reply
CHAT_TOKENS_PER_MESSAGE = 3
CHAT_REPLY_PRIMING = 3
#: OpenAI's and vLLM's default for /v1/completions
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class ApiError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI error type to answer with."""

    def __init__(
        self, status: int, message: str, *, type: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}
        }


@dataclass(frozen=True)
class GenerationRequest:
    """A parsed ``/v1/completions`` or ``/v1/chat/completions`` body."""

    chat: bool
    #: the prompt as the simulator's tokens (words, or ids), for prefix caching
    tokens: tuple[str | int, ...]
    #: what identifies the content, for the deterministic EOS and output text
    content_key: bytes
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool

    @property
    def prompt_tokens(self) -> int:
        return len(self.tokens)


def _int_field(body: dict[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {value!r}", param=name)
    if value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}, got {value}.", param=name)
    return value


def _bool_field(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, got {value!r}", param=name)
    return value


def _completion_prompt(body: dict[str, Any]) -> tuple[tuple[str | int, ...], bytes]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return tuple(prompt.split()), b"p" + prompt.encode("utf-8", "surrogatepass")
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return tuple(prompt), b"i" + json.dumps(prompt).encode()
    if isinstance(prompt, list):
        raise ApiError(
            400,
            "the simulator serves one prompt per request; send a string or a list of token ids",
            param="prompt",
        )
    raise ApiError(400, "prompt is required: a string or a list of token ids", param="prompt")


def _message_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ApiError(
                    400, f"messages[{index}].content: the simulator accepts text parts only", param="messages"
                )
            texts.append(part["text"])
        return " ".join(texts)
    raise ApiError(
        400, f"messages[{index}].content must be a string or a list of text parts", param="messages"
    )


def _chat_prompt(body: dict[str, Any]) -> tuple[tuple[str | int, ...], bytes]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages is required: a non-empty list of {role, content}", param="messages")
    tokens: list[str | int] = []
    key: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string role", param="messages")
        role = message["role"]
        text = _message_text(message.get("content"), i)
        # a stand-in chat template: <start> role words... <end>
        tokens.extend(("<|start|>", role))
        tokens.extend(text.split())
        tokens.append("<|end|>")
        key.append(f"{role}\x1f{text}")
    tokens.extend(("<|start|>", "assistant", "<|sep|>"))
    return tuple(tokens), b"m" + "\x1e".join(key).encode("utf-8", "surrogatepass")


def parse_generation(body: Any, *, chat: bool, served_model: str, max_model_len: int) -> GenerationRequest:
    """Validate a request body the way vLLM does; :class:`ApiError` (400/404) if it is refused."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != served_model:
        raise ApiError(404, f"The model `{model}` does not exist.", type="NotFoundError", param="model")
    n = _int_field(body, "n", minimum=1)
    if n is not None and n > 1:
        raise ApiError(400, "the simulator supports n=1 only", param="n")
    tokens, key = _chat_prompt(body) if chat else _completion_prompt(body)
    if not tokens:
        raise ApiError(400, "The prompt cannot be empty.", param="prompt")
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ApiError(400, f"seed must be an integer, got {seed!r}", param="seed")
        key = f"seed={seed};".encode() + key

    prompt_len = len(tokens)
    if prompt_len >= max_model_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your request has "
            f"{prompt_len} input tokens. Please reduce the length of the input messages.",
        )
    max_tokens = None
    if chat:
        max_tokens = _int_field(body, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = (
            max_model_len - prompt_len
            if chat
            else min(COMPLETIONS_DEFAULT_MAX_TOKENS, max_model_len - prompt_len)
        )
    elif max_tokens > max_model_len - prompt_len:
        raise ApiError(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. "
            f"This model's maximum context length is {max_model_len} tokens "
            f"and your request has {prompt_len} input tokens "
            f"({max_tokens} > {max_model_len} - {prompt_len}).",
        )
    min_tokens = _int_field(body, "min_tokens", minimum=0) or 0
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    include_usage = bool(options and options.get("include_usage"))
    return GenerationRequest(
        chat=chat,
        tokens=tokens,
        content_key=key,
        max_tokens=max_tokens,
        min_tokens=min(min_tokens, max_tokens),
        ignore_eos=_bool_field(body, "ignore_eos"),
        stream=_bool_field(body, "stream"),
        include_usage=include_usage,
    )


class ResponseFormat:
    """Renders one request's responses; the constant parts of its chunks are built once."""

    def __init__(self, request_id: str, model: str, *, chat: bool, emit_timestamps: bool = False) -> None:
        self.chat = chat
        self.emit_timestamps = emit_timestamps
        self.request_id = request_id
        self.model = model
        self.created = int(time.time())
        head = {
            "id": request_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        self._head = "data: " + json.dumps(head, separators=(",", ":"))[:-1]
        if chat:
            self._open = ',"choices":[{"index":0,"delta":{"content":"'
            self._close = '"},"logprobs":null,"finish_reason":'
        else:
            self._open = ',"choices":[{"index":0,"text":"'
            self._close = '","logprobs":null,"finish_reason":'

    def _tail(self) -> str:
        if self.emit_timestamps:
            return f',"x_sent_at":{time.time():.6f}}}\n\n'
        return "}\n\n"

    def role_chunk(self) -> str:
        """Chat streams open with the assistant role, as OpenAI's and vLLM's do."""
        return (
            self._head
            + ',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            + '"logprobs":null,"finish_reason":null}]'
            + self._tail()
        )

    def chunk(self, text: str, finish_reason: str | None = None) -> str:
        """One content chunk; ``text`` must be plain ASCII words (no escaping is done)."""
        reason = "null" if finish_reason is None else f'"{finish_reason}"'
        stop = "" if self.chat else ',"stop_reason":null'
        return self._head + self._open + text + self._close + reason + stop + "}]" + self._tail()

    def usage_chunk(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
    ) -> str:
        usage: dict[str, Any] = dict(self.usage(prompt_tokens, completion_tokens))
        if cached_tokens is not None:
            # vLLM's shape (``--enable-prompt-tokens-details``): how much of the prompt was a
            # prefix-cache hit, so a client can check that its measured prompts were not cached
            usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
        text = json.dumps(usage, separators=(",", ":"))
        return self._head + ',"choices":[],"usage":' + text + self._tail()

    DONE = "data: [DONE]\n\n"

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        }

    def full(
        self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
    ) -> dict[str, Any]:
        """The non-streaming response body."""
        choice: dict[str, Any]
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
        return {
            "id": self.request_id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [choice],
            "usage": self.usage(prompt_tokens, completion_tokens),
        }
