"""The load generator against a real streaming server on 127.0.0.1: broken servers give counted
errors (never a crash), closed and open loops keep their promises, and ``autotuner bench`` works
end to end as a subprocess."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.loadgen import (
    LoadOptions,
    TargetConfig,
    arrival_offsets,
    collect,
    find_capacity,
    run_load_point,
    run_sync,
)
from specs.errors import TransientError
from specs.metrics import ALL_METRICS
from specs.model import SloBound
from specs.records import LoadPointRecord
from tests.fakes.openai_server import MODEL, FakeOpenAI, prompts


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(itl_s=0.001, hang_s=10) as s:
        yield s


def measure(
    url: str,
    reqs: list[Any],
    api: str = "completions",
    *,
    concurrency: int | None = 3,
    request_rate: float | None = None,
    **options: Any,
) -> LoadPointRecord:
    """One load point; ``options`` are :class:`LoadOptions` fields (``timeout_s`` 5 s unless given)."""
    target = TargetConfig(url, model=MODEL, api=api)  # type: ignore[arg-type]
    options.setdefault("timeout_s", 5.0)
    return run_sync(
        run_load_point(
            target, reqs, concurrency=concurrency, request_rate=request_rate, options=LoadOptions(**options)
        )
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("http500", "http_500"),
        ("close_mid", "truncated_stream"),
        ("invalid_json", "invalid_json"),
        ("stream_error", "stream_error"),
        ("truncated_clean", "truncated_stream"),
        ("not_stream", "not_streaming"),
        ("empty", "no_content"),
    ],
)
@pytest.mark.parametrize("api", ["completions", "chat"])
def test_each_fault_is_a_counted_error(server: FakeOpenAI, fault: str, kind: str, api: str) -> None:
    result = measure(server.url, prompts(9, fault_every=3, fault=fault), api=api)
    assert result.metrics["completed"] == 6
    assert result.metrics["failed"] == 3
    assert result.errors == {kind: 3}
    assert result.metrics["error_rate"] == pytest.approx(1 / 3)
    assert result.metrics["ttft_p50_ms"] is not None  # the good requests are still measured


def test_a_server_that_never_answers_times_out(server: FakeOpenAI) -> None:
    result = measure(server.url, prompts(4, fault_every=2, fault="hang"), timeout_s=0.5)
    assert result.errors == {"timeout": 2}
    assert result.metrics["completed"] == 2


def test_no_requests_is_an_empty_load_point(server: FakeOpenAI) -> None:
    result = measure(server.url, [])
    assert result.metrics["completed"] == 0 and result.metrics["failed"] == 0
    assert result.metrics["request_throughput"] is None
    assert result.metrics["ttft_p50_ms"] is None


def test_unreachable_server_counts_connection_errors() -> None:
    result = measure(f"http://127.0.0.1:{free_port()}", prompts(5), timeout_s=2.0)
    assert result.metrics["completed"] == 0
    assert result.errors == {"connection": 5}
    assert result.metrics["error_rate"] == 1.0
    assert result.metrics["ttft_p50_ms"] is None


def test_unreachable_server_without_a_model_name_is_a_clear_error() -> None:
    target = TargetConfig(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="cannot reach"):
        run_sync(run_load_point(target, prompts(2), concurrency=1))


def test_missing_usage_falls_back_to_chunks_and_says_so() -> None:
    with FakeOpenAI(tokens_per_chunk=2, usage=False) as s:
        result = measure(s.url, prompts(4, max_tokens=8))
    # 8 tokens in 4 chunks of 2: without usage the chunks are all we can count
    assert result.extra["total_output_tokens"] == 4 * 4
    assert any("counted streamed content chunks" in n for n in result.notes)
    assert result.metrics["total_throughput"] is None  # no prompt_tokens and no dataset count


def test_usage_counts_tokens_when_chunks_carry_several() -> None:
    with FakeOpenAI(tokens_per_chunk=2) as s:
        result = measure(s.url, prompts(4, max_tokens=8))
    assert result.extra["total_output_tokens"] == 4 * 8
    assert result.extra["total_input_tokens"] == 4 * 4  # "hello there request N"
    assert not any("chunks" in n for n in result.notes)


def test_finish_reason_without_done_is_complete(server: FakeOpenAI) -> None:
    result = measure(server.url, prompts(4, fault_every=2, fault="no_done"))
    assert result.metrics["completed"] == 4 and result.errors == {}


@pytest.mark.parametrize("framing", ["crlf", "split"])
def test_legal_sse_framings_parse(server: FakeOpenAI, framing: str) -> None:
    result = measure(server.url, prompts(3, max_tokens=5, fault_every=1, fault=framing))
    assert result.errors == {}
    assert result.metrics["completed"] == 3
    assert result.extra["total_output_tokens"] == 15


def test_chat_role_chunk_is_not_the_first_token() -> None:
    # the role-only delta comes at once; content only after a 150 ms TTFT
    with FakeOpenAI(ttft_s=0.15) as s:
        result = measure(s.url, prompts(2), api="chat")
    ttft = result.metrics["ttft_p50_ms"]
    assert ttft is not None and ttft >= 150


# ------------------------------------------------------------------------------------- loops


def test_closed_loop_keeps_exactly_concurrency_in_flight() -> None:
    with FakeOpenAI(itl_s=0.005) as s:
        run = run_sync(collect(TargetConfig(s.url, model=MODEL), prompts(24, max_tokens=6), concurrency=4))
        assert s.max_in_flight == 4
    assert run.max_in_flight == 4
    assert len(run.records) == 24
    assert [r.index for r in run.records] == list(range(24))


def test_warmup_is_sent_but_not_counted() -> None:
    with FakeOpenAI() as s:
        result = measure(s.url, prompts(6), warmup=3)
        assert len(s.arrivals) == 9
    assert result.metrics["completed"] == 6
    assert result.extra["warmup"] == {"sent": 3, "failed": 0}


def test_open_loop_sends_on_the_seeded_schedule() -> None:
    rate, n, seed = 40.0, 30, 11
    with FakeOpenAI() as s:
        result = measure(s.url, prompts(n, max_tokens=2), concurrency=None, request_rate=rate, seed=seed)
        arrivals = [t - s.arrivals[0] for t in s.arrivals]
    assert result.load_kind == "request_rate" and result.load_value == rate
    expected = arrival_offsets(n, rate, seed=seed)
    # every request reached the server close to its scheduled time (loop and OS jitter only)
    late = [a - e for a, e in zip(sorted(arrivals), expected, strict=True)]
    assert max(abs(x) for x in late) < 0.05, late


def test_open_loop_cap_bounds_requests_in_flight() -> None:
    with FakeOpenAI(itl_s=0.01) as s:
        measure(s.url, prompts(12, max_tokens=5), concurrency=2, request_rate=math.inf)
        assert s.max_in_flight == 2


def test_infinite_rate_sends_all_at_once() -> None:
    with FakeOpenAI(itl_s=0.01) as s:
        result = measure(s.url, prompts(10, max_tokens=5), concurrency=None, request_rate=math.inf)
        assert s.max_in_flight == 10
    assert result.metrics["completed"] == 10


def test_max_duration_cancels_and_says_so() -> None:
    with FakeOpenAI(itl_s=0.05) as s:
        result = measure(s.url, prompts(10, max_tokens=40), concurrency=2, max_duration_s=0.3)
    assert result.extra["cancelled"] == 2
    assert any("max_duration_s" in n for n in result.notes)
    assert result.metrics["failed"] == 0  # cancelled by us, not failed by the server


def test_capacity_search_finds_where_a_slowing_server_breaks_the_slo() -> None:
    # TTFT grows 40 ms per request in flight: c requests in flight -> about 40*c ms,
    # so TTFT p50 <= 180 ms holds up to 4 and breaks at 5
    with FakeOpenAI(ttft_per_in_flight_s=0.04) as s:
        result = run_sync(
            find_capacity(
                TargetConfig(s.url, model=MODEL),
                prompts(10, max_tokens=2),
                low=1,
                high=16,
                options=LoadOptions(slo={"ttft_p50_ms": SloBound(max=180)}, timeout_s=5),
            )
        )
    assert result.capacity == 4, [(p.load_value, p.metrics["ttft_p50_ms"]) for p in result.points]


# ------------------------------------------------------------------------------------- CLI


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "bench", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_json_output(server: FakeOpenAI) -> None:
    proc = bench(
        "--url", server.url, "--concurrency", "1,4", "--requests", "8",
        "--output-len", "4", "--input-len", "6", "--slo", "ttft_p90_ms<=5000", "--gpus", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"] == MODEL
    points = data["load_points"]
    assert [p["load_value"] for p in points] == [1, 4]
    for p in points:
        assert set(p["metrics"]) == set(ALL_METRICS)
        assert p["metrics"]["completed"] == 8
        assert p["metrics"]["slo_attainment"] == 1.0
        assert p["metrics"]["output_throughput_per_gpu"] == pytest.approx(
            p["metrics"]["output_throughput"] / 2
        )
        assert p["source"] == "autotuner"
    assert "concurrency 4: 8/8 done" in proc.stderr


def test_cli_table_counts_errors(server: FakeOpenAI) -> None:
    proc = bench("--url", server.url, "--rate", "inf", "--requests", "5", "--output-len", "3")
    assert proc.returncode == 0, proc.stderr
    assert "rate=inf" in proc.stdout
    assert "TTFT p90 ms" in proc.stdout


def test_cli_dataset_file(server: FakeOpenAI, tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "tell me a story"}\n{"prompt": "what is two plus two"}\n')
    proc = bench("--url", server.url, "--dataset", str(data), "--requests", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["load_points"][0]["metrics"]["completed"] == 5
    assert "repeated" in out["prompts"]
    bad = bench("--url", server.url, "--dataset", str(data), "--prompt-field", "text")
    assert bad.returncode == 1 and "text" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_import_prints_the_same_shape(repo_root: Path) -> None:
    sample = repo_root / "tests" / "unit" / "adapters" / "data" / "genai-bench-sample"
    proc = bench("--import", "genai-bench", str(sample), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["source"] == "genai-bench"
    assert [p["load_value"] for p in data["load_points"]] == [1, 4]
    assert all(set(p["metrics"]) == set(ALL_METRICS) for p in data["load_points"])
    table = bench("--import", "genai-bench", str(sample))
    assert table.returncode == 0 and "c=4" in table.stdout


def test_cli_import_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    proc = bench("--import", "vllm-bench", str(tmp_path / "nope.json"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:{port}"], "cannot reach"),
        (["--url", "not a url"], "invalid server URL"),
        (["--url", "http://127.0.0.1:{port}", "--slo", "ttft_p90<=5"], "unknown SLO metric"),
        (["--url", "http://127.0.0.1:{port}", "--slo", "ttft_p90_ms=5"], "METRIC<=MAX"),
        (["--url", "http://127.0.0.1:{port}", "--concurrency", "1,x"], "not a number"),
        ([], "--url is required"),
    ],
)
def test_cli_user_errors_are_one_line(args: list[str], message: str) -> None:
    port = free_port()
    proc = bench(*[a.format(port=port) for a in args])
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
