"""Does the live sim engine show its own model? Live HTTP runs against the offline model.

The sim engine's offline mode (:mod:`backends.sim.offline`) computes what the engine would do
with no server and no wall clock. A live run (the HTTP server paced at ``--time-scale``, the
load generator reporting in the engine's time) should give the same throughput and TTFT; what
it adds is the wall-clock cost of HTTP, parsing and the two event loops, multiplied by the time
scale. This script measures the gap for the demo's workload (``specs/examples/quickstart-sim.yaml``:
prompts of 512 ± 64 words, 128 output tokens, concurrency 4 / 16 / 64) at several time scales.

Run from the repository root: ``python benchmarks/sim/bench_live_vs_offline.py [--scales 1,2,5,20]
[--requests 64] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from backends.loadgen import LoadOptions, TargetConfig, collect, fetch_model, run_sync, summarize_run
from backends.sim.build import build
from backends.sim.config import parse_config
from backends.sim.offline import Item, run_arrivals, run_closed_loop
from backends.workloads import build_workload
from specs.errors import AutotunerError
from specs.model import LengthDist, SyntheticDataset

#: one of the demo's configurations (the quickstart's search space), as engine flags
CONFIGS: dict[str, list[str]] = {
    "seqs64-mbt2048": [
        "--max-num-seqs",
        "64",
        "--max-num-batched-tokens",
        "2048",
        "--enable-chunked-prefill",
    ],
    "seqs256-mbt8192": [
        "--max-num-seqs",
        "256",
        "--max-num-batched-tokens",
        "8192",
        "--enable-chunked-prefill",
    ],
}
BASE = ["--model", "llama-3-8b", "--gpu", "h100", "--max-model-len", "4096"]


def start_sim(flags: list[str], scale: float) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "backends.sim", *BASE, *flags, "--port", "0", "--startup-seconds", "0"]
    argv += ["--time-scale", f"{scale:g}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            url = found.group(1)
            for _ in range(100):
                try:
                    run_sync(fetch_model(TargetConfig(url), timeout_s=2))
                    return proc, url
                except AutotunerError:  # still starting
                    time.sleep(0.1)
    proc.kill()
    raise SystemExit("the sim engine did not start")


def workload(n: int) -> list[Any]:
    ds = SyntheticDataset(
        kind="synthetic", input=LengthDist(mean=512, stddev=64), output=LengthDist(mean=128)
    )
    here = Path.cwd()
    return list(build_workload(ds, seed=7, base_dir=here, cache_dir=here).requests[:n])


def compare(flags: list[str], scale: float, levels: list[int], n: int) -> list[dict[str, Any]]:
    reqs = workload(n)
    setup = build(parse_config([*BASE, *flags]))
    proc, url = start_sim(flags, scale)
    rows = []
    try:
        target = TargetConfig(url, ignore_eos=True)
        for c in levels:
            run = run_sync(collect(target, reqs, concurrency=c, options=LoadOptions(time_scale=scale)))
            live = summarize_run(run).metrics
            items = [Item(r.input_tokens, r.max_tokens) for r in reqs]
            closed = run_closed_loop(setup, items, c).summary()
            t0 = min(r.send_time for r in run.records)
            replay = run_arrivals(setup, items, [(r.send_time - t0) * scale for r in run.records]).summary()
            row: dict[str, Any] = {"scale": scale, "concurrency": c}
            for name, model in (("closed_loop", closed), ("replay", replay)):
                for metric in ("output_throughput", "ttft_p90_ms"):
                    row[f"{metric}_live"] = live[metric]
                    row[f"{metric}_{name}"] = model[metric]
                    row[f"{metric}_vs_{name}_pct"] = 100 * ((live[metric] or 0) / model[metric] - 1)
            rows.append(row)
            # the cache and the scheduler start from nothing at the next level, like the offline run
            proc_reset(url)
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def proc_reset(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url + "/reset_prefix_cache", method="POST", data=b"")):
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="1,2,5,20")
    p.add_argument("--levels", default="4,16,64")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--config", choices=sorted(CONFIGS), action="append")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    before = os.getloadavg()
    out: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_before": before, "rows": []}
    for name in args.config or sorted(CONFIGS):
        for scale in (float(x) for x in args.scales.split(",")):
            for row in compare(CONFIGS[name], scale, [int(x) for x in args.levels.split(",")], args.requests):
                out["rows"].append({"config": name, **row})
                if not args.json:
                    r = row
                    print(
                        f"{name} scale {scale:g} c={r['concurrency']}: live vs replay: throughput "
                        f"{r['output_throughput_vs_replay_pct']:+.1f}%, "
                        f"TTFT p90 {r['ttft_p90_ms_vs_replay_pct']:+.1f}% "
                        f"({r['ttft_p90_ms_live']:.1f} vs {r['ttft_p90_ms_replay']:.1f} ms); vs closed loop: "
                        f"{r['output_throughput_vs_closed_loop_pct']:+.1f}%, "
                        f"{r['ttft_p90_ms_vs_closed_loop_pct']:+.1f}%",
                        flush=True,
                    )
    out["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"load average before {before[0]:.2f}, after {out['loadavg_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
