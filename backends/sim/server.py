"""The engine process: aiohttp routes, start-up, readiness, faults and shutdown.

It behaves like a real engine process, because the code it tests treats it as one: it binds its
port and prints ``listening on http://HOST:PORT`` (the contract for ``--port 0``), answers
``/health`` with 503 until its simulated model load is over, exits 1 with the real engines'
messages when the configuration cannot run, exits 0 promptly on SIGTERM, and can be told to
crash or hang (``--fault``) so that the deploy and experiment code can be tested against broken
engines too.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``,
``POST /reset_prefix_cache``, ``GET /metrics`` (Prometheus text, vLLM's metric names),
``GET /version`` and ``GET /sim/info`` (the configuration and memory plan, as JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from backends.sim.api import ApiError, GenerationRequest, ResponseFormat, parse_generation
from backends.sim.build import EngineSetup, build
from backends.sim.config import SimConfig, parse_config
from backends.sim.engine import AsyncEngine, Stream, is_finished
from backends.sim.errors import StartupError
from backends.sim.text import output_text

LOG_PREFIX = "autotuner-sim:"
SIM_HEADERS = {"X-Simulated-Engine": "autotuner-sim"}
SSE_HEADERS = {
    **SIM_HEADERS,
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
}


def log(message: str) -> None:
    print(f"INFO {LOG_PREFIX} {message}", flush=True)


def log_error(message: str) -> None:
    print(f"ERROR {LOG_PREFIX} {message}", file=sys.stderr, flush=True)


class ServerState:
    """What the routes share besides the engine: readiness and the count of started requests."""

    def __init__(self, setup: EngineSetup) -> None:
        self.setup = setup
        #: the simulated model load is over (``/health`` answers 200)
        self.ready = False
        #: generation requests started, for ``--fault crash-after-requests``
        self.started = 0


ENGINE_KEY = web.AppKey("engine", AsyncEngine)
STATE_KEY = web.AppKey("state", ServerState)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=SIM_HEADERS)


def _error(exc: ApiError) -> web.Response:
    return _json(exc.body(), status=exc.status)


def _not_ready() -> web.Response:
    return _error(ApiError(503, "the engine is still loading the model", type="ServiceUnavailableError"))


# -- routes ------------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    if not request.app[STATE_KEY].ready:
        return _json({"status": "loading"}, status=503)
    return web.Response(status=200, headers=SIM_HEADERS)


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if not state.ready:
        return _not_ready()
    setup = state.setup
    card = {
        "id": setup.config.model_name,
        "object": "model",
        "created": 0,
        "owned_by": "autotuner-sim",
        "root": setup.model.hf_id,
        "parent": None,
        "max_model_len": setup.max_model_len,
        "permission": [],
    }
    return _json({"object": "list", "data": [card]})


async def version(request: web.Request) -> web.Response:
    return _json({"version": "autotuner-sim", "simulated": True})


async def info(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    engine = request.app[ENGINE_KEY]
    return _json({**state.setup.summary(), "ready": state.ready, "metrics": engine.metrics()})


async def reset_prefix_cache(request: web.Request) -> web.Response:
    dropped = request.app[ENGINE_KEY].reset_prefix_cache()
    return _json({"dropped_blocks": dropped})


async def metrics(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    setup = request.app[STATE_KEY].setup
    label = "{model_name=" + json.dumps(setup.config.model_name) + "}"
    values = engine.metrics()
    kinds = {
        "num_requests_running": "gauge",
        "num_requests_waiting": "gauge",
        "kv_cache_usage_perc": "gauge",
        "num_preemptions_total": "counter",
        "prompt_tokens_total": "counter",
        "generation_tokens_total": "counter",
        "request_success_total": "counter",
        "prefix_cache_queries_total": "counter",
        "prefix_cache_hits_total": "counter",
        "time_to_first_token_seconds_sum": "counter",
        "time_to_first_token_seconds_count": "counter",
        "e2e_request_latency_seconds_sum": "counter",
        "e2e_request_latency_seconds_count": "counter",
    }
    lines = ["# autotuner-sim: simulated engine, these numbers are not measured on a GPU"]
    for name, kind in kinds.items():
        lines.append(f"# TYPE vllm:{name} {kind}")
        lines.append(f"vllm:{name}{label} {values[name]:g}")
    lines.append("# TYPE autotuner_sim_simulated_seconds counter")
    lines.append(f"autotuner_sim_simulated_seconds {values['simulated_seconds']:.6f}")
    lines.append("# TYPE autotuner_sim_info gauge")
    lines.append(
        f'autotuner_sim_info{{model="{setup.model.key}",gpu="{setup.gpu.key}",'
        f'tensor_parallel_size="{setup.gpus}",time_scale="{setup.config.time_scale:g}"}} 1'
    )
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", headers=SIM_HEADERS)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    engine = request.app[ENGINE_KEY]
    if not state.ready:
        return _not_ready()
    setup = state.setup
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(ApiError(400, f"the request body is not valid JSON: {exc}"))
    try:
        gen = parse_generation(
            body, chat=chat, served_model=setup.config.model_name, max_model_len=setup.max_model_len
        )
    except ApiError as exc:
        return _error(exc)

    req, offset = engine.make_request(gen)
    prefix = "chatcmpl-" if chat else "cmpl-"
    fmt = ResponseFormat(
        f"{prefix}sim-{req.request_id}",
        setup.config.model_name,
        chat=chat,
        emit_timestamps=setup.config.emit_timestamps,
    )
    stream = engine.submit(req, offset)
    try:
        if gen.stream:
            return await _stream(request, state, stream, gen, fmt)
        _count_start(state)
        while not stream.done:
            await stream.event.wait()
            stream.event.clear()
            if stream.closed:
                raise web.HTTPServiceUnavailable(text="the engine is shutting down")
        text = output_text(offset, 0, req.num_output)
        return _json(fmt.full(text, req.finish_reason, req.prompt_tokens, req.num_output))
    finally:
        engine.abort(stream)


async def _stream(
    request: web.Request, state: ServerState, stream: Stream, gen: GenerationRequest, fmt: ResponseFormat
) -> web.StreamResponse:
    req = stream.req
    resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await resp.prepare(request)
    _count_start(state)
    sent = 0
    while True:
        await stream.event.wait()
        stream.event.clear()
        if stream.closed:
            return resp  # shutting down: the client sees a stream without [DONE]
        upto = stream.announced
        parts: list[str] = []
        if upto > sent:
            if sent == 0 and fmt.chat:
                parts.append(fmt.role_chunk())
            finish = req.finish_reason if stream.done and is_finished(req) else None
            parts.append(fmt.chunk(output_text(stream.offset, sent, upto - sent), finish))
            sent = upto
        if stream.done:
            if gen.include_usage:
                parts.append(fmt.usage_chunk(req.prompt_tokens, sent, req.cached_tokens))
            parts.append(fmt.DONE)
        if parts:
            await resp.write("".join(parts).encode())
        if stream.done:
            await resp.write_eof()
            return resp


def _count_start(state: ServerState) -> None:
    state.started += 1
    config = state.setup.config
    if config.fault == "crash-after-requests" and state.started >= config.fault_after:
        asyncio.get_running_loop().call_soon(_crash, state.started)


def _crash(started: int) -> None:
    log_error(f"simulated fault: crash-after-requests, the engine dies after {started} started requests")
    os._exit(1)


# -- process -----------------------------------------------------------------------------------


def build_app(engine: AsyncEngine, state: ServerState) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[ENGINE_KEY] = engine
    app[STATE_KEY] = state
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/version", version)
    app.router.add_get("/sim/info", info)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/reset_prefix_cache", reset_prefix_cache)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _log_setup(setup: EngineSetup) -> None:
    m = setup.memory
    gib = m.to_dict()
    log("simulated engine: every number it serves comes from a model, not a GPU")
    log(
        f"model {setup.model.key} ({setup.model.hf_id}) on {setup.gpus}x {setup.gpu.name}, "
        f"{setup.precision.label} weights, kv-cache-dtype {setup.config.kv_cache_dtype}"
    )
    log(
        f"memory per GPU: weights {gib['weights_gib']:.2f} GiB, "
        f"activations {gib['activations_gib']:.2f} GiB, "
        f"non-torch {gib['non_torch_gib']:.2f} GiB, KV cache {gib['kv_cache_gib']:.2f} GiB "
        f"(--gpu-memory-utilization {setup.config.gpu_memory_utilization:g} of {gib['total_gib']:.2f} GiB)"
    )
    log(
        f"# GPU blocks: {m.num_blocks}; maximum concurrency for {setup.max_model_len} tokens per request: "
        f"{m.kv_capacity_tokens / setup.max_model_len:.2f}x"
    )


async def _serve(setup: EngineSetup) -> int:
    config = setup.config
    engine = AsyncEngine(setup)
    state = ServerState(setup)
    runner = web.AppRunner(
        build_app(engine, state), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        log_error(f"cannot listen on {_url(config.host, config.port)}: {exc.strerror or exc}")
        return 1
    port = runner.addresses[0][1]
    load_s = setup.startup_seconds / config.time_scale
    log(f"listening on {_url(config.host, port)} (ready in {load_s:.2f} s)")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def become_ready() -> None:
        if config.fault == "hang-at-start":
            log("simulated fault: hang-at-start, the engine will never become ready")
            return
        await asyncio.sleep(load_s)
        state.ready = True
        log("ready: /health answers 200")

    engine_task = asyncio.create_task(engine.run(), name="sim-engine")
    ready_task = asyncio.create_task(become_ready(), name="sim-ready")
    stop_task = asyncio.create_task(stop.wait(), name="sim-stop")
    try:
        await asyncio.wait({engine_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if engine_task.done():
            engine_task.result()  # a bug in the engine loop: let it crash loudly
        log("shutting down")
    finally:
        engine.close()
        for task in (engine_task, ready_task, stop_task):
            task.cancel()
        for task in (engine_task, ready_task, stop_task):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
    return 0


def serve(config: SimConfig) -> int:
    """Run the engine process in the foreground; the exit code (0 after SIGTERM, 1 on failure)."""
    if config.fault == "crash-at-start":
        log_error("simulated fault: crash-at-start, the engine exits before loading the model")
        return 1
    try:
        setup = build(config)
    except StartupError as exc:
        log_error(str(exc))
        return 1
    _log_setup(setup)
    return asyncio.run(_serve(setup))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m backends.sim [flags]``."""
    return serve(parse_config(argv))
