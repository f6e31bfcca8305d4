"""``autotuner run`` and ``autotuner demo`` on the real llama.cpp server (llama-cpp-python) with a
tiny random GGUF model written on the spot: measured differences between configurations, the
best command line starting the server again, and misconfigurations that only llama.cpp detects
ending as FAILED experiments that quote llama.cpp.

Needs the ``llamacpp`` extra (CI installs it); skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from backends.deploy.procs import free_port
from tests.e2e.helpers import autotuner, engine_pids, records

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("gguf") is None,
        reason="needs the llamacpp extra: pip install 'autotuner[llamacpp]' (llama-cpp-python, gguf)",
    ),
]

MODEL = "./models/tiny-llama.gguf"
OUTPUT_TOKENS = 32
REQUESTS = 6

SPEC = """\
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {{name: {name}}}
spec:
  model: {{id: {model}}}
  engine:
    name: llamacpp
    args: {{n_threads_batch: 1{args}}}
  backend: {{kind: local, startupTimeout: 60s}}
  search:
    strategy: grid
    maxExperiments: {budget}
    includeDefault: false
    # every configuration at every level: these tests look at what llama.cpp measured, and a
    # noisy slow start must not get n_threads=2 pruned at concurrency 1
    pruning: false
    experimentTimeout: 120s
    parameters:
{parameters}
  workload:
    dataset: {{kind: synthetic, input: {{mean: 16, stddev: 2}}, output: {{mean: {output}}}}}
    load: {{concurrency: [1, 2]}}
    requestsPerLevel: {requests}
    warmupRequests: 1
  slo:
    ttft_p90_ms: {{max: 30000}}
  objectives:
    - {{metric: output_throughput, direction: maximize}}
"""


def llamacpp_spec(name: str, parameters: str, *, budget: int, args: str = "", extra: str = "") -> str:
    text = SPEC.format(
        name=name,
        model=MODEL,
        args=args,
        budget=budget,
        parameters=parameters,
        output=OUTPUT_TOKENS,
        requests=REQUESTS,
    )
    return text.replace("  workload:\n", extra + "  workload:\n") if extra else text


@pytest.fixture
def specs_dir(tmp_path: Path) -> Path:
    """A folder with the tiny model at ./models/tiny-llama.gguf, as a specs repository has it."""
    from backends.engines.llamacpp_model import write_tiny_gguf

    write_tiny_gguf(tmp_path / MODEL)
    return tmp_path


def _get_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _llama_servers(marker: str) -> list[int]:
    """Live llama-cpp-python servers whose command line contains ``marker``."""
    return engine_pids(marker, engine="llama_cpp.server")


def test_threads_are_measured_for_real_and_the_best_command_starts_again(specs_dir: Path) -> None:
    spec = llamacpp_spec("threads", "      n_threads: {values: [1, 2]}", budget=2, args=", n_ctx: 256")
    (specs_dir / "spec.yaml").write_text(spec)
    proc = autotuner("run", "spec.yaml", "--results", "results", cwd=specs_dir, timeout=240)
    assert "done: 2 complete, 0 failed" in proc.stderr

    recs = records(specs_dir / "results", "threads")
    assert [r["state"] for r in recs] == ["COMPLETE", "COMPLETE"]
    by_threads = {r["config"]["n_threads"]: r for r in recs}
    assert set(by_threads) == {1, 2}
    model_path = str((specs_dir / MODEL).resolve())
    for threads, r in by_threads.items():
        argv = r["command"]
        # the relative model path was resolved against the spec's folder before the launch
        assert argv[argv.index("--model") + 1] == model_path
        assert argv[argv.index("--n_threads") + 1] == str(threads)
        assert argv[argv.index("--interrupt_requests") + 1] == "false"
        assert [p["load_value"] for p in r["loadPoints"]] == [1.0, 2.0]
        for p in r["loadPoints"]:
            m = p["metrics"]
            assert m["completed"] == REQUESTS and m["failed"] == 0
            assert m["ttft_p50_ms"] > 0 and m["tpot_p50_ms"] > 0 and m["e2e_p50_ms"] > m["ttft_p50_ms"]
            # every stream ran to its full length, also with two requests in flight (the server
            # interrupts a running stream for a new request unless interrupt_requests is false)
            tokens_per_request = m["output_throughput"] * m["duration_s"] / m["completed"]
            assert tokens_per_request == pytest.approx(OUTPUT_TOKENS, abs=0.01)
            assert any("no usage" in n for n in p["notes"])
    # real measurements: the two configurations did not measure the same
    one, two = by_threads[1], by_threads[2]
    assert one["summary"]["output_throughput"] != two["summary"]["output_throughput"]
    assert one["summary"]["ttft_p50_ms"] != two["summary"]["ttft_p50_ms"]

    # the winner's command line, as committed, starts the server again from the specs folder
    best_dir = specs_dir / "results" / "threads" / "best"
    best = json.loads((best_dir / "engine-args.json").read_text())
    assert best["experiment"] in (one["id"], two["id"])
    argv = shlex.split((best_dir / "command.sh").read_text().splitlines()[-1])
    assert argv[argv.index("--model") + 1] == MODEL
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    base = f"http://127.0.0.1:{port}"
    with subprocess.Popen(argv, cwd=specs_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as server:
        try:
            deadline = time.monotonic() + 60
            models = None
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    models = _get_json(base + "/v1/models", timeout=2)
                    break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.2)
            assert models is not None, "the best command did not start a server"
            assert models["data"][0]["id"] == MODEL
            out = _get_json(base + "/v1/completions", {"prompt": "the of and", "max_tokens": 8})
            assert out["usage"]["completion_tokens"] == 8
        finally:
            server.terminate()
            server.wait(timeout=20)
    assert _llama_servers(str(specs_dir)) == []


def test_misconfigurations_fail_with_llama_cpp_s_own_words(specs_dir: Path) -> None:
    # The tiny model's head size is 16; a q8_0 cache needs it to be a multiple of 32, which only
    # llama.cpp knows (it depends on the model file). A context of 32 tokens holds no prompt of the
    # workload: every request is refused. The spec itself is valid: only running finds these.
    spec = llamacpp_spec(
        "misconfig",
        "      n_ctx: {values: [32, 256]}",
        budget=4,
        extra="    quantization: {kvcache_dtype: [auto, q8_0]}\n",
    )
    (specs_dir / "spec.yaml").write_text(spec)
    autotuner("validate", "spec.yaml", cwd=specs_dir)
    autotuner("run", "spec.yaml", "--results", "results", cwd=specs_dir, timeout=240)

    recs = records(specs_dir / "results", "misconfig")
    assert len(recs) == 4
    by_config = {(r["config"]["quant.kvcache_dtype"], r["config"]["n_ctx"]): r for r in recs}
    assert by_config[("auto", 256)]["state"] == "COMPLETE"
    for n_ctx in (32, 256):
        failed = by_config[("q8_0", n_ctx)]
        assert failed["state"] == "FAILED"
        failure = failed["failure"]
        assert failure["kind"] == "startup_crash"
        # llama.cpp's own line, not only the Python wrapper's "Failed to create llama_context"
        assert "K cache type q8_0 with block size 32 does not divide n_embd_head_k=16" in failure["reason"]
        assert "Failed to create llama_context" in failure["reason"]
        assert "llama_init_from_model" in failure["log_tail"]
        # the mapping turned flash attention on for the quantized V cache
        argv = failed["command"]
        assert argv[argv.index("--flash_attn") + 1] == "true"
        assert argv[argv.index("--type_k") + 1] == "8"
    too_short = by_config[("auto", 32)]
    assert too_short["state"] == "FAILED"
    assert too_short["failure"]["kind"] == "benchmark_errors"
    assert "requests failed at every load level" in too_short["failure"]["reason"]
    assert _llama_servers(str(specs_dir)) == []


def test_the_demo_tunes_llama_cpp_and_builds_the_site(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = autotuner("demo", "--engine", "llamacpp", "--out", str(out), "-q", cwd=tmp_path, timeout=300)
    assert "report site" in proc.stdout
    user = out / "specs-repo"
    assert (user / "models" / "tiny-llama.gguf").stat().st_size < 1_000_000
    recs = records(user / "results", "llamacpp-demo")
    # nothing failed; a configuration clearly behind the best at concurrency 1 may be PRUNED
    assert recs and all(r["state"] in ("COMPLETE", "PRUNED") for r in recs), [r["state"] for r in recs]
    measured = [r for r in recs if r["state"] == "COMPLETE"]
    assert len(measured) >= 2
    assert len({r["summary"]["output_throughput"] for r in measured}) == len(measured)
    assert (user / "results" / "llamacpp-demo" / "best" / "command.sh").exists()
    assert (out / "site" / "index.html").exists()
    # the model and the results are committed to the specs repository
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=user, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "models/tiny-llama.gguf" in tracked
    assert any(t.startswith("results/llamacpp-demo/experiments/") for t in tracked)


@pytest.mark.skipif(shutil.which("llama-server") is None, reason="needs llama.cpp's llama-server on PATH")
def test_the_native_llama_server_variant(specs_dir: Path) -> None:
    spec = llamacpp_spec(
        "native",
        "      threads: {values: [1, 2]}\n      parallel: {values: [1, 2]}",
        budget=4,
        extra="    quantization: {kvcache_dtype: [auto, q8_0]}\n",
    )
    spec = spec.replace("    name: llamacpp\n", "    name: llamacpp\n    variant: native\n")
    spec = spec.replace("n_threads_batch: 1", "threads-batch: 1, ctx-size: 512, no-webui: true")
    spec = spec.replace("maxExperiments: 4", "maxExperiments: 8")
    (specs_dir / "spec.yaml").write_text(spec)
    autotuner("run", "spec.yaml", "--results", "results", cwd=specs_dir, timeout=240)
    recs = records(specs_dir / "results", "native")
    assert len(recs) == 8
    for r in recs:
        argv = r["command"]
        assert argv[0] == "llama-server"
        if r["config"]["quant.kvcache_dtype"] == "q8_0":
            assert r["state"] == "FAILED"
            assert argv[argv.index("--flash-attn") + 1] == "true"
            assert argv[argv.index("--cache-type-k") + 1] == "q8_0"
            assert "does not divide n_embd_head_k=16" in r["failure"]["reason"]
            continue
        assert r["state"] == "COMPLETE"
        assert argv[argv.index("--parallel") + 1] == str(r["config"]["parallel"])
        for p in r["loadPoints"]:
            m = p["metrics"]
            assert m["completed"] == REQUESTS and m["failed"] == 0
            # llama-server reports usage in the stream: no chunk counting
            assert not any("no usage" in n for n in p["notes"])
            tokens_per_request = m["output_throughput"] * m["duration_s"] / m["completed"]
            assert tokens_per_request == pytest.approx(OUTPUT_TOKENS, abs=0.01)
