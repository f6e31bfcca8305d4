"""Shared helpers of the end-to-end tests: spec text, running the CLI, finding engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIM_SPEC = """\
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {{name: {name}}}
spec:
  model: {{id: llama-3-8b}}
  engine:
    name: sim
    args: {{gpu: h100, max-model-len: 2048, time-scale: 50, startup-seconds: 0.2{args}}}
  search:
    strategy: {strategy}
    maxExperiments: {budget}
    includeDefault: false
    # every configuration at both levels: the tests compare whole records, and a busy machine's
    # slow first level must not get a configuration pruned
    pruning: false
    seed: 5
    parameters:
{parameters}
  workload:
    dataset: {{kind: synthetic, input: {{mean: 200, stddev: 20}}, output: {{mean: 40}}}}
    load: {{concurrency: [2, 16]}}
    requestsPerLevel: 24
    warmupRequests: 2
  slo:
    # loose: on a busy machine a few real milliseconds of scheduling, times time-scale 50, are
    # seconds of simulated TTFT, and a tight SLO would stop levels the tests expect to run
    ttft_p90_ms: {{max: 60000}}
  objectives:
{objectives}
"""

PARAMS = """\
      max-num-seqs: {values: [4, 8, 16, 32, 64]}
      max-num-batched-tokens: {values: [512, 1024, 2048]}
      enable-prefix-caching: {values: [true, false]}"""


def sim_spec(
    name: str = "e2e",
    *,
    strategy: str = "tpe",
    budget: int = 6,
    parameters: str = PARAMS,
    objectives: str = "    - {metric: output_throughput_per_gpu, direction: maximize}",
    args: str = "",
    extra: str = "",
) -> str:
    text = SIM_SPEC.format(
        name=name, strategy=strategy, budget=budget, parameters=parameters, objectives=objectives, args=args
    )
    return text + extra


def autotuner(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"autotuner {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def records(results: Path, name: str) -> list[dict[str, Any]]:
    folder = results / name / "experiments"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*.json"))]


def engine_pids(marker: str, engine: str = "backends.sim") -> list[int]:
    """Live ``engine`` processes whose command line contains ``marker`` (e.g. the results path)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if marker in cmd and engine in cmd and ") Z " not in stat:
            pids.append(int(proc.name))
    return pids


def wait_no_engines(marker: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = engine_pids(marker)
        if not left:
            return []
        time.sleep(0.1)
    return engine_pids(marker)
