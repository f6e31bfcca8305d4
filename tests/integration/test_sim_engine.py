"""The simulated engine as a real process: started on 127.0.0.1, driven over HTTP with aiohttp.

Every test starts its own engine with ``--port 0``, finds the port from the ``listening on``
line, and stops it with SIGTERM (checking the exit code), so the tests exercise exactly what a
deploy backend sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")
FAST = ["--startup-seconds", "0"]


class Engine:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err
        self.url = ""

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_listening(self, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.stdout())
            if match:
                self.url = match.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"no 'listening on' line within {timeout} s: {self.stdout()}")

    def health(self) -> int:
        return asyncio.run(_status(self.url + "/health"))

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == 200:
                return
            time.sleep(0.02)
        raise AssertionError("engine never became ready")

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextmanager
def engine(tmp_path: Path, *flags: str, cli: bool = False, ready: bool = True) -> Iterator[Engine]:
    out, err = tmp_path / f"engine-{time.monotonic_ns()}.out", tmp_path / f"engine-{time.monotonic_ns()}.err"
    prefix = (
        [sys.executable, "-m", "reconciler", "engine", "sim"]
        if cli
        else [sys.executable, "-m", "backends.sim"]
    )
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*prefix, "--host", "127.0.0.1", "--port", "0", *flags], stdout=stdout, stderr=stderr
        )
    eng = Engine(proc, out, err)
    try:
        eng.wait_listening()
        if ready:
            eng.wait_ready()
        yield eng
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def run_process(tmp_path: Path, *flags: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backends.sim", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        await resp.read()
        return resp.status


async def post(url: str, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body if isinstance(body, str) else json.dumps(body)) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send a streaming request; the events, their arrival times and the timings of the response."""
    sent = time.perf_counter()
    events: list[Any] = []
    arrivals: list[float] = []
    async with session.post(url, json={**body, "stream": True}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line:
                continue
            assert line.startswith("data: "), line
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
            arrivals.append(time.perf_counter())
    content = [i for i, e in enumerate(events) if e != "[DONE]" and e["choices"] and _text(e)]
    return {
        "events": events,
        "ttft": arrivals[content[0]] - sent if content else None,
        "e2e": arrivals[-1] - sent,
        "text": "".join(_text(events[i]) for i in content),
        "usage": next((e["usage"] for e in events if e != "[DONE]" and e.get("usage")), None),
        "finish": next(
            (
                e["choices"][0]["finish_reason"]
                for e in events
                if e != "[DONE]" and e["choices"] and e["choices"][0].get("finish_reason")
            ),
            None,
        ),
    }


def _text(event: dict[str, Any]) -> str:
    choice = event["choices"][0]
    return str(choice.get("text") or choice.get("delta", {}).get("content") or "")


async def load(
    url: str, concurrency: int, requests: int, prompt_words: int, max_tokens: int
) -> dict[str, float]:
    """A closed loop of ``concurrency`` clients; throughput and mean TPOT, measured by the client."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                prompt = f"request {i} " + " ".join(f"w{j}" for j in range(prompt_words))
                results.append(
                    await stream(
                        session,
                        url + "/v1/completions",
                        {
                            "prompt": prompt,
                            "max_tokens": max_tokens,
                            "ignore_eos": True,
                            "stream_options": {"include_usage": True},
                        },
                    )
                )

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        duration = time.perf_counter() - start
    tokens = sum(r["usage"]["completion_tokens"] for r in results)
    tpots = [(r["e2e"] - r["ttft"]) / (r["usage"]["completion_tokens"] - 1) for r in results]
    return {"throughput": tokens / duration, "tpot": sum(tpots) / len(tpots)}


# -- the API -----------------------------------------------------------------------------------


def test_streams_completions_like_vllm(tmp_path: Path) -> None:
    with engine(tmp_path, *FAST, "--time-scale", "20", "--served-model-name", "sim-model") as eng:

        async def go() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session:
                return await stream(
                    session,
                    eng.url + "/v1/completions",
                    {
                        "model": "sim-model",
                        "prompt": "one two three four five",
                        "max_tokens": 40,
                        "ignore_eos": True,
                        "stream_options": {"include_usage": True},
                    },
                )

        result = asyncio.run(go())
        assert eng.stop() == 0
    events = result["events"]
    assert events[-1] == "[DONE]"
    assert result["usage"] == {
        "prompt_tokens": 5,
        "total_tokens": 45,
        "completion_tokens": 40,
        # vLLM's shape with --enable-prompt-tokens-details: nothing was cached
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert len(result["text"].split()) == 40
    assert result["finish"] == "length"
    assert all(e["system_fingerprint"] == "autotuner-sim" and e["model"] == "sim-model" for e in events[:-1])
    assert events[-2]["choices"] == []  # the usage chunk comes last, then [DONE]


def test_chat_non_streaming_models_and_metrics(tmp_path: Path) -> None:
    with engine(tmp_path, *FAST, "--time-scale", "50", "--model", "Qwen/Qwen2.5-7B-Instruct") as eng:

        async def go() -> tuple[Any, ...]:
            async with aiohttp.ClientSession() as session:
                async with session.get(eng.url + "/v1/models") as resp:
                    models = await resp.json()
                    simulated = resp.headers["X-Simulated-Engine"]
                status, body = await post(
                    eng.url + "/v1/chat/completions",
                    {
                        "messages": [{"role": "user", "content": "say something"}],
                        "max_tokens": 12,
                        "ignore_eos": True,
                    },
                )
                chat = await stream(
                    session,
                    eng.url + "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": True},
                )
                async with session.get(eng.url + "/metrics") as resp:
                    metrics = await resp.text()
                async with session.get(eng.url + "/sim/info") as resp:
                    info = await resp.json()
                async with session.post(eng.url + "/reset_prefix_cache") as resp:
                    reset = resp.status
                return models, simulated, status, body, chat, metrics, info, reset

        models, simulated, status, body, chat, metrics, info, reset = asyncio.run(go())
        assert eng.stop() == 0
    assert models["data"][0]["id"] == "Qwen/Qwen2.5-7B-Instruct"
    assert models["data"][0]["max_model_len"] == 32768
    assert simulated == "autotuner-sim"
    assert status == 200 and body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] == 12 == len(body["choices"][0]["message"]["content"].split())
    assert body["usage"]["prompt_tokens"] == 2 + 3 + 3  # words + per-message + reply priming
    assert chat["events"][0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(chat["text"].split()) == 3
    assert 'vllm:generation_tokens_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 15' in metrics
    assert "vllm:kv_cache_usage_perc" in metrics
    assert (
        info["simulated"] is True and info["model"] == "qwen2.5-7b" and info["memory"]["num_gpu_blocks"] > 0
    )
    assert reset == 200


def test_bad_requests_get_400_with_a_json_error(tmp_path: Path) -> None:
    with engine(tmp_path, *FAST, "--max-model-len", "64") as eng:

        async def go() -> list[tuple[int, Any]]:
            url = eng.url + "/v1/completions"
            return [
                await post(url, "{not json"),
                await post(url, {"prompt": " ".join(["w"] * 80)}),
                await post(url, {"prompt": "a b", "max_tokens": 100}),
                await post(url, {"prompt": "a b", "model": "gpt-4"}),
            ]

        (bad_json, too_long, too_many, wrong_model) = asyncio.run(go())
        assert eng.stop() == 0
    assert bad_json[0] == 400 and "not valid JSON" in bad_json[1]["error"]["message"]
    assert too_long[0] == 400 and "maximum context length is 64 tokens" in too_long[1]["error"]["message"]
    assert too_many[0] == 400 and "too large: 100" in too_many[1]["error"]["message"]
    assert wrong_model[0] == 404 and wrong_model[1]["error"]["type"] == "NotFoundError"


def test_health_is_503_while_loading(tmp_path: Path) -> None:
    with engine(tmp_path, "--startup-seconds", "0.6", "--time-scale", "1", ready=False) as eng:
        assert eng.health() == 503
        status, body = asyncio.run(post(eng.url + "/v1/completions", {"prompt": "x"}))
        assert status == 503 and "loading" in body["error"]["message"]
        started = time.monotonic()
        eng.wait_ready()
        assert time.monotonic() - started < 3.0
        assert "ready" in eng.stdout()
        assert eng.stop() == 0


# -- start-up failures and faults --------------------------------------------------------------


def test_out_of_memory_at_start(tmp_path: Path) -> None:
    done = run_process(tmp_path, "--model", "llama-3-70b", "--gpu", "rtx-4090")
    assert done.returncode == 1
    assert "out of memory" in done.stderr.lower()
    assert "listening on" not in done.stdout
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    done = run_process(tmp_path, "--model", "llama-3-8", "--max-num-seqs", "8")
    assert done.returncode == 2
    assert "did you mean" in done.stderr and "Traceback" not in done.stderr


def test_fault_crash_at_start(tmp_path: Path) -> None:
    done = run_process(tmp_path, "--fault", "crash-at-start")
    assert done.returncode != 0
    assert "crash-at-start" in done.stderr


def test_fault_hang_at_start_never_becomes_ready(tmp_path: Path) -> None:
    with engine(tmp_path, *FAST, "--fault", "hang-at-start", ready=False) as eng:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert eng.health() == 503
            time.sleep(0.05)
        assert eng.stop() == 0


def test_fault_crash_after_requests(tmp_path: Path) -> None:
    with engine(
        tmp_path, *FAST, "--time-scale", "10", "--fault", "crash-after-requests", "--fault-after", "2"
    ) as eng:

        async def go() -> tuple[Any, BaseException | None]:
            first = await post(eng.url + "/v1/completions", {"prompt": "a", "max_tokens": 4})
            try:
                async with aiohttp.ClientSession() as session:
                    await stream(
                        session,
                        eng.url + "/v1/completions",
                        {"prompt": "b", "max_tokens": 500, "ignore_eos": True},
                    )
            except (aiohttp.ClientError, AssertionError) as exc:
                return first, exc
            return first, None

        first, failure = asyncio.run(go())
        assert eng.proc.wait(5) == 1
    assert first[0] == 200
    assert failure is not None  # the second request was cut off
    assert "crash-after-requests" in eng.stderr()


def test_sigterm_during_streams_exits_zero_quickly(tmp_path: Path) -> None:
    with engine(tmp_path, *FAST, "--time-scale", "1") as eng:

        async def go() -> None:
            async with aiohttp.ClientSession() as session:
                task = asyncio.create_task(
                    stream(
                        session,
                        eng.url + "/v1/completions",
                        {"prompt": "x", "max_tokens": 2000, "ignore_eos": True},
                    )
                )
                await asyncio.sleep(0.3)
                eng.proc.send_signal(signal.SIGTERM)
                try:
                    result = await asyncio.wait_for(task, 5)
                except aiohttp.ClientError:
                    return
                # or the stream ends early, without [DONE]: a truncated response
                assert result["events"][-1] != "[DONE]"
                assert len(result["text"].split()) < 2000

        started = time.monotonic()
        asyncio.run(go())
        assert eng.proc.wait(5) == 0
        assert time.monotonic() - started < 4.0
    assert "shutting down" in eng.stdout()


def test_port_in_use_is_a_clean_failure(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "backends.sim", "--port", str(port), *FAST],
            capture_output=True,
            text=True,
            timeout=15,
        )
    assert done.returncode == 1
    assert "cannot listen" in done.stderr and "Traceback" not in done.stderr


def test_autotuner_engine_sim_runs_the_same_server(tmp_path: Path) -> None:
    with engine(tmp_path, *FAST, "--model", "tiny-1b", "--gpu", "rtx-4090", cli=True) as eng:
        status, body = asyncio.run(post(eng.url + "/v1/completions", {"prompt": "hello", "max_tokens": 3}))
        assert eng.stop() == 0
    assert status == 200 and body["usage"]["completion_tokens"] <= 3
    assert "llama-3.2-1b" in eng.stdout()


# -- the model, seen from outside --------------------------------------------------------------


def test_same_seed_same_token_counts(tmp_path: Path) -> None:
    prompts = [f"prompt number {i} " + "lorem " * i for i in range(12)]

    def counts(seed: str) -> list[int]:
        with engine(tmp_path, *FAST, "--time-scale", "100", "--seed", seed) as eng:

            async def go() -> list[int]:
                async with aiohttp.ClientSession() as session:
                    results = await asyncio.gather(
                        *(
                            stream(
                                session,
                                eng.url + "/v1/completions",
                                {"prompt": p, "max_tokens": 600, "stream_options": {"include_usage": True}},
                            )
                            for p in prompts
                        )
                    )
                return [r["usage"]["completion_tokens"] for r in results]

            out = asyncio.run(go())
            assert eng.stop() == 0
            return out

    first, again, other = counts("7"), counts("7"), counts("8")
    assert first == again
    assert first != other
    assert any(c < 600 for c in first)  # the simulated EOS stops some of them early


def test_time_scale_runs_faster_than_real_time(tmp_path: Path) -> None:
    body = {"prompt": " ".join(["w"] * 500), "max_tokens": 48, "ignore_eos": True}

    def e2e(scale: str) -> float:
        with engine(tmp_path, *FAST, "--time-scale", scale) as eng:

            async def go() -> float:
                async with aiohttp.ClientSession() as session:
                    result = await stream(session, eng.url + "/v1/completions", body)
                    assert len(result["text"].split()) == 48
                    return float(result["e2e"])

            out = asyncio.run(go())
            assert eng.stop() == 0
            return out

    real, fast = e2e("1"), e2e("20")
    assert real > 0.25  # ~48 decode steps of ~7 ms on an H100, plus the prefill
    assert fast < real / 5


@pytest.mark.slow
def test_more_sequences_more_throughput_worse_tpot_over_http(tmp_path: Path) -> None:
    # long prompts: with a big batch, every arriving prompt's prefill stalls many decodes
    def measure(seqs: str) -> dict[str, float]:
        with engine(tmp_path, *FAST, "--time-scale", "5", "--max-num-seqs", seqs) as eng:
            out = asyncio.run(load(eng.url, concurrency=16, requests=32, prompt_words=1000, max_tokens=48))
            assert eng.stop() == 0
            return out

    few, many = measure("2"), measure("16")
    assert many["throughput"] > 2 * few["throughput"]
    assert many["tpot"] > few["tpot"]


@pytest.mark.slow
def test_tensor_parallel_lowers_latency_over_http(tmp_path: Path) -> None:
    body = {"prompt": " ".join(["w"] * 2000), "max_tokens": 64, "ignore_eos": True}

    def e2e(tp: str) -> float:
        with engine(tmp_path, *FAST, "--time-scale", "2", "--tensor-parallel-size", tp) as eng:

            async def go() -> float:
                async with aiohttp.ClientSession() as session:
                    return float((await stream(session, eng.url + "/v1/completions", body))["e2e"])

            out = asyncio.run(go())
            assert eng.stop() == 0
            return out

    assert e2e("2") < 0.85 * e2e("1")


def test_fp8_kv_cache_has_more_blocks(tmp_path: Path) -> None:
    def blocks(dtype: str) -> int:
        with engine(tmp_path, *FAST, "--kv-cache-dtype", dtype) as eng:

            async def go() -> Any:
                async with aiohttp.ClientSession() as session, session.get(eng.url + "/sim/info") as resp:
                    return await resp.json()

            info = asyncio.run(go())
            assert eng.stop() == 0
            assert f"# GPU blocks: {info['memory']['num_gpu_blocks']}" in eng.stdout()
            return int(info["memory"]["num_gpu_blocks"])

    assert blocks("fp8") >= 2 * blocks("auto")


def test_zero_cost_streams_one_token_per_chunk_with_timestamps(tmp_path: Path) -> None:
    with engine(tmp_path, "--zero-cost", "--emit-timestamps") as eng:

        async def go() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session:
                return await stream(
                    session,
                    eng.url + "/v1/completions",
                    {"prompt": "x", "max_tokens": 200, "ignore_eos": True},
                )

        started = time.monotonic()
        result = asyncio.run(go())
        elapsed = time.monotonic() - started
        assert eng.stop() == 0
    chunks = [e for e in result["events"] if e != "[DONE]"]
    assert len(chunks) == 200  # every token its own chunk
    assert all(isinstance(e["x_sent_at"], float) and abs(e["x_sent_at"] - time.time()) < 60 for e in chunks)
    assert elapsed < 2.0


def test_process_environment_is_not_needed(tmp_path: Path) -> None:
    """The engine runs from any directory with a minimal environment (as systemd starts it)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "backends.sim", "--fault", "crash-at-start"],
        capture_output=True,
        text=True,
        timeout=15,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 1 and "crash-at-start" in done.stderr


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^vllm:{name}{{[^}}]*}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_disconnected_clients_free_their_sequences_and_prefixes_are_shared(tmp_path: Path) -> None:
    with engine(tmp_path, *FAST, "--time-scale", "1") as eng:

        async def go() -> tuple[str, str]:
            async with aiohttp.ClientSession() as session:
                body = {"prompt": "x", "max_tokens": 4000, "ignore_eos": True, "stream": True}
                async with session.post(eng.url + "/v1/completions", json=body) as resp:
                    await resp.content.readline()  # the first chunk: the request is running
                    async with session.get(eng.url + "/metrics") as m:
                        during = await m.text()
                # leaving the block closed the connection mid-stream
                shared = " ".join(f"system{i}" for i in range(300))
                for question in ("one", "two"):
                    await post(
                        eng.url + "/v1/completions", {"prompt": f"{shared} {question}", "max_tokens": 2}
                    )
                await asyncio.sleep(0.3)
                async with session.get(eng.url + "/metrics") as m:
                    after = await m.text()
                return during, after

        during, after = asyncio.run(go())
        assert eng.stop() == 0
    assert _metric(during, "num_requests_running") == 1
    assert _metric(after, "num_requests_running") == 0
    assert _metric(after, "kv_cache_usage_perc") == 0
    # the second prompt reused the first one's full blocks of the shared 300 words
    assert _metric(after, "prefix_cache_hits_total") >= 288
