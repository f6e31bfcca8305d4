"""The server under test and the requests sent to it.

The load generator depends on nothing of the dataset code: any object with ``.prompt`` and
``.max_tokens`` (and optionally ``.input_tokens``) is a request, per :class:`PromptLike`. Request
bodies are serialized to bytes *before* a load point starts, so no JSON encoding competes with
the stream reading that is being timed.

URLs: ``base_url`` may be given with or without the trailing ``/v1`` (users copy either form
from their engine's log); :func:`normalize_base_url` accepts both and rejects anything that is
not an absolute http(s) URL with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp

from specs.errors import TransientError, UserError

Api = Literal["completions", "chat"]


@runtime_checkable
class PromptLike(Protocol):
    """One request of a workload (``backends.workloads.RequestSpec`` has this shape)."""

    @property
    def prompt(self) -> str: ...

    @property
    def max_tokens(self) -> int: ...


def normalize_base_url(url: str) -> str:
    """``http://host:8000/v1/`` -> ``http://host:8000``; a UserError for anything unusable."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.hostname:
        raise UserError(
            f"invalid server URL {url!r}: expected http://HOST:PORT (optionally ending in /v1)",
            hint="for example --url http://127.0.0.1:8000",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UserError(f"invalid port in server URL {url!r}") from None
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


@dataclass(frozen=True)
class TargetConfig:
    """An OpenAI-compatible endpoint and how to call it."""

    base_url: str
    #: served model name; None = ask ``GET /v1/models`` and take the first
    model: str | None = None
    api: Api = "completions"
    #: vLLM/SGLang extension: generate exactly ``max_tokens`` (fixed output lengths)
    ignore_eos: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    #: extra JSON fields merged into every request body (temperature, top_p, ...)
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    #: keep each content chunk's ``x_sent_at`` (the sim engine's server send time) for lag studies
    server_timestamps: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", normalize_base_url(self.base_url))
        if self.api not in ("completions", "chat"):
            raise UserError(f"unknown API {self.api!r}: use 'completions' or 'chat'")

    @property
    def endpoint(self) -> str:
        path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        return self.base_url + path

    def body(self, model: str, prompt: str, max_tokens: int) -> bytes:
        """The JSON body of one streamed request, as bytes."""
        payload: dict[str, Any] = {"model": model}
        if self.api == "chat":
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = prompt
        payload["max_tokens"] = max_tokens
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        if self.ignore_eos:
            payload["ignore_eos"] = True
        payload.update(self.extra_body)
        return json.dumps(payload, ensure_ascii=False).encode()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def fetch_model(target: TargetConfig, *, timeout_s: float = 30.0) -> str:
    """The first model the server lists at ``GET /v1/models``.

    Raises TransientError when the server cannot be reached (it may still be starting) and
    UserError when it answers but lists no models or is not OpenAI-compatible.
    """
    url = target.base_url + "/v1/models"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=dict(target.headers)) as session,
            session.get(url) as resp,
        ):
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise TransientError(
            f"cannot reach {target.base_url}: {_describe(exc)}",
            hint="is the server running, and is the URL's host and port right?",
        ) from None
    if status != 200:
        raise UserError(
            f"GET {url} answered HTTP {status}: {text[:200]!r}",
            hint="give the served model name with --model",
        )
    try:
        data = json.loads(text)
        models = [m["id"] for m in data["data"]]
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"GET {url} did not return an OpenAI model list: {text[:200]!r}",
            hint="give the served model name with --model",
        ) from None
    if not models or not isinstance(models[0], str):
        raise UserError(f"the server at {target.base_url} lists no models", hint="give --model")
    return models[0]
