"""The demo's live numbers against the sim's own model, for one of its configurations.

A live run (the sim engine over HTTP at the demo's time scale, the load generator reporting in
the engine's time) is compared with the offline model fed the same arrivals
(:func:`backends.sim.offline.run_arrivals`): what differs is what the live path adds (HTTP,
parsing, two event loops, times the time scale). The demo's scale is chosen so that this stays
small (docs/sim-engine.md, "Live against the model").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.loadgen import LoadOptions, TargetConfig, collect, fetch_model, run_sync, summarize_run
from backends.sim.build import build
from backends.sim.config import parse_config
from backends.sim.offline import Item, run_arrivals
from backends.workloads import build_workload
from specs import load_spec_text
from specs.errors import AutotunerError

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = load_spec_text((REPO / "specs" / "examples" / "quickstart-sim.yaml").read_text()).spec
FLAGS = ["--model", "llama-3-8b", "--gpu", "h100", "--max-model-len", "4096"]
CONFIG = ["--max-num-seqs", "64", "--max-num-batched-tokens", "2048", "--enable-chunked-prefill"]


@pytest.fixture
def sim() -> Iterator[str]:
    scale = QUICKSTART.spec.engine.args["time-scale"]
    argv = [sys.executable, "-m", "backends.sim", *FLAGS, *CONFIG, "--port", "0", "--startup-seconds", "0"]
    with subprocess.Popen([*argv, "--time-scale", str(scale)], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        yield from _serve(proc)


def _serve(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    try:
        url = ""
        for line in proc.stdout:
            if found := re.search(r"listening on (http://\S+)", line):
                url = found.group(1)
                break
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        for _ in range(100):
            try:
                run_sync(fetch_model(TargetConfig(url), timeout_s=2))
                break
            except AutotunerError:  # still loading
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_live_throughput_and_ttft_follow_the_model(sim: str, tmp_path: Path) -> None:
    scale = float(QUICKSTART.spec.engine.args["time-scale"])  # type: ignore[arg-type]
    wl = QUICKSTART.spec.workload
    reqs = build_workload(
        wl.dataset, seed=QUICKSTART.spec.search.seed, base_dir=tmp_path, cache_dir=tmp_path
    ).requests
    reqs = reqs[: wl.requests_per_level]
    run = run_sync(
        collect(
            TargetConfig(sim, ignore_eos=True), reqs, concurrency=16, options=LoadOptions(time_scale=scale)
        )
    )
    live = summarize_run(run).metrics
    t0 = min(r.send_time for r in run.records)
    model = run_arrivals(
        build(parse_config([*FLAGS, *CONFIG])),
        [Item(r.input_tokens or 0, r.max_tokens) for r in reqs],
        [(r.send_time - t0) * scale for r in run.records],
    ).summary()
    throughput = live["output_throughput"] / model["output_throughput"] - 1  # type: ignore[operator]
    ttft = live["ttft_p90_ms"] / model["ttft_p90_ms"] - 1  # type: ignore[operator]
    assert abs(throughput) <= 0.05, f"throughput {throughput:+.1%} against the model"
    # TTFT carries the live path's wall-clock cost per request times the scale. On an
    # overloaded host (more runnable jobs than cores) that cost is CPU starvation of the two
    # event loops, not the sim: measured +8 % to +37 % at this scale on the project's 2-core
    # machine at load average 7-9 (docs/sim-engine.md). There TTFT cannot be judged.
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        pytest.skip(
            f"TTFT p90 {ttft:+.1%} against the model not judged: load average {load:.1f} on {cores} cores "
            f"(throughput {throughput:+.1%} passed)"
        )
    # a correctness bound, not the performance figure: a defect (the time scale applied twice
    # or not at all, a send stamp taken late) is tens of percent or more; the few-percent gap
    # of a quiet host is measured by benchmarks/sim/bench_live_vs_offline.py (docs/sim-engine.md:
    # +1.9 % to +9.3 % at this scale), and a busy CI neighbour moves it by a few percent more
    assert abs(ttft) <= 0.15, f"TTFT p90 {ttft:+.1%} against the model"
