"""Measure the search benchmark's surfaces once, on the sim engine's offline model.

Every configuration of each surface's space is built with the simulator's own start-up checks
and memory plan (:func:`backends.sim.build.build`) and served with
:func:`backends.sim.offline.run_closed_loop` at each load level: the numbers the HTTP sim
engine would give at ``--time-scale`` → infinity, in milliseconds of CPU each. A configuration
the simulator refuses becomes one FAILED row with its message. The engine default (every
searched flag at the simulator's default) is marked ``default``.

Run: ``python -m benchmarks.search.measure`` (writes ``benchmarks/search/surfaces/*.csv`` and
the matching ``*.yaml`` specs). The surfaces are deterministic (fixed workload seeds).
"""

from __future__ import annotations

import csv
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.sim.build import build
from backends.sim.config import build_parser, config_from_args
from backends.sim.errors import OutOfMemoryError, StartupError
from backends.sim.offline import Item, run_closed_loop

HERE = Path(__file__).parent
SURFACES = HERE / "surfaces"
METRICS = (
    "output_throughput",
    "output_throughput_per_gpu",
    "request_throughput",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "tpot_p90_ms",
    "tpot_p99_ms",
    "e2e_p90_ms",
    "completed",
    "duration_s",
)


@dataclass
class Surface:
    name: str
    title: str
    model: str
    gpu: str
    params: dict[str, list[Any]]
    levels: list[int]
    slo: dict[str, tuple[float, bool]]
    objectives: list[tuple[str, str]] = field(
        default_factory=lambda: [("output_throughput_per_gpu", "maximize")]
    )
    fixed: dict[str, Any] = field(default_factory=dict)
    input_mean: int = 512
    input_std: int = 64
    output_mean: int = 128
    shared_prefix: int = 0
    requests: int = 96


SIM_DEFAULTS = {
    "max-num-seqs": 256,
    "max-num-batched-tokens": 8192,
    "enable-chunked-prefill": True,
    "enable-prefix-caching": True,
    "gpu-memory-utilization": 0.9,
    "tensor-parallel-size": 1,
    "kv-cache-dtype": "auto",
    "block-size": 16,
}

ALL = [
    Surface(
        name="tight-slo",
        title="tight SLO (8B, H100, 2k prompts)",
        model="llama-3-8b",
        gpu="h100",
        params={
            "max-num-seqs": [16, 32, 64, 128, 256, 512],
            "max-num-batched-tokens": [1024, 2048, 4096, 8192, 16384],
            "enable-chunked-prefill": [True, False],
            "gpu-memory-utilization": [0.8, 0.9, 0.95],
        },
        fixed={"max-model-len": 4096},
        levels=[8, 32, 128],
        input_mean=2048,
        input_std=256,
        slo={"ttft_p90_ms": (600.0, True), "tpot_p99_ms": (40.0, True)},
    ),
    Surface(
        name="oom-70b",
        title="70B with OOM regions (A100-80G)",
        model="llama-3-70b",
        gpu="a100-80g",
        params={
            "tensor-parallel-size": [1, 2, 4, 8],
            "gpu-memory-utilization": [0.8, 0.9, 0.95],
            "max-num-seqs": [32, 64, 128, 256],
            "max-num-batched-tokens": [2048, 4096, 8192, 16384],
            "kv-cache-dtype": ["auto", "fp8"],
        },
        fixed={"max-model-len": 8192},
        levels=[8, 32, 128],
        slo={"ttft_p90_ms": (2000.0, True)},
    ),
    Surface(
        name="flat",
        title="flat (1B, H100, short chat)",
        model="llama-3.2-1b",
        gpu="h100",
        params={
            "block-size": [16, 32],
            "gpu-memory-utilization": [0.8, 0.85, 0.9, 0.95],
            "enable-prefix-caching": [True, False],
            "max-num-seqs": [256, 384, 512, 1024],
            "enable-chunked-prefill": [True, False],
        },
        fixed={"max-model-len": 2048},
        levels=[4, 16],
        input_mean=256,
        input_std=32,
        output_mean=64,
        slo={"ttft_p90_ms": (1000.0, True)},
    ),
    Surface(
        name="default-best",
        title="engine default already best (8B, H100)",
        model="llama-3-8b",
        gpu="h100",
        params={
            "max-num-seqs": [16, 32, 64, 128, 256],
            "max-num-batched-tokens": [1024, 2048, 4096, 8192],
            "gpu-memory-utilization": [0.7, 0.8, 0.9],
            "block-size": [16, 32, 64, 128],
        },
        fixed={"max-model-len": 4096},
        levels=[16, 64, 256],
        slo={"ttft_p90_ms": (5000.0, True)},
    ),
    Surface(
        name="prefix-heavy",
        title="prefix-heavy RAG traffic (8B, L40S)",
        model="llama-3-8b",
        gpu="l40s",
        params={
            "enable-prefix-caching": [True, False],
            "max-num-seqs": [16, 32, 64, 128, 256],
            "max-num-batched-tokens": [1024, 2048, 4096, 8192],
            "kv-cache-dtype": ["auto", "fp8"],
            "gpu-memory-utilization": [0.85, 0.9, 0.95],
        },
        fixed={"max-model-len": 8192},
        levels=[8, 32, 64],
        input_mean=3072,
        input_std=256,
        shared_prefix=2560,
        slo={"ttft_p90_ms": (1500.0, True), "tpot_p99_ms": (60.0, True)},
    ),
    Surface(
        name="two-objectives",
        title="two objectives: throughput per GPU vs TTFT p90 (8B, H100)",
        model="llama-3-8b",
        gpu="h100",
        params={
            "max-num-seqs": [16, 32, 64, 128, 256, 512],
            "max-num-batched-tokens": [1024, 2048, 4096, 8192],
            "enable-chunked-prefill": [True, False],
            "tensor-parallel-size": [1, 2],
            "kv-cache-dtype": ["auto", "fp8"],
        },
        fixed={"max-model-len": 4096},
        levels=[8, 32, 128],
        input_mean=1024,
        input_std=128,
        slo={"tpot_p99_ms": (80.0, True)},
        objectives=[("output_throughput_per_gpu", "maximize"), ("ttft_p90_ms", "minimize")],
    ),
]


def _items(s: Surface) -> list[Item]:
    rng = random.Random(f"surface-{s.name}")
    out = []
    for i in range(s.requests):
        n = max(16, int(rng.gauss(s.input_mean, s.input_std)))
        prompt: tuple[Any, ...] | None = None
        if s.shared_prefix:
            shared = min(s.shared_prefix, n - 8)
            prompt = tuple(("doc", k) for k in range(shared)) + tuple((i, k) for k in range(n - shared))
        out.append(Item(n, s.output_mean, prompt))
    return out


def _argv(s: Surface, config: dict[str, Any]) -> list[str]:
    argv = ["--model", s.model, "--gpu", s.gpu]
    for name, value in {**s.fixed, **config}.items():
        if isinstance(value, bool):
            argv.append(f"--{name}" if value else f"--no-{name}")
        else:
            argv += [f"--{name}", str(value)]
    return argv


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def measure(s: Surface) -> list[dict[str, str]]:
    items = _items(s)
    parser = build_parser()
    names = list(s.params)
    default = {n: SIM_DEFAULTS[n] for n in names}
    rows: list[dict[str, str]] = []
    configs = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*s.params.values())]
    if default not in configs:
        configs.append(default)
    for config in configs:
        base = {n: _cell(config[n]) for n in names}
        is_default = "true" if config == default else "false"
        try:
            setup = build(config_from_args(parser.parse_args(_argv(s, config))))
        except (OutOfMemoryError, StartupError) as exc:
            kind = "oom" if isinstance(exc, OutOfMemoryError) else "startup_crash"
            rows.append(
                {
                    **base,
                    "concurrency": "",
                    "state": "FAILED",
                    "failure_kind": kind,
                    "failure_reason": str(exc)[:300],
                    "default": is_default,
                }
            )
            continue
        for level in s.levels:
            summary = run_closed_loop(setup, items, level).summary()
            row = {
                **base,
                "concurrency": str(level),
                "state": "COMPLETE",
                "failure_kind": "",
                "failure_reason": "",
                "default": is_default,
            }
            for m in METRICS:
                row[m] = _cell(summary[m]) if m in summary else ""
            rows.append(row)
    return rows


def spec_yaml(s: Surface, strategy: str = "tpe", seed: int = 0, budget: int = 40) -> str:
    params = "\n".join(
        f"      {n}: {{values: [{', '.join(_cell(v) for v in vs)}]}}" for n, vs in s.params.items()
    )
    slo = "\n".join(
        f"    {m}: {{max: {mx:g}, hard: {'true' if hard else 'false'}}}" for m, (mx, hard) in s.slo.items()
    )
    objectives = "\n".join(f"    - {{metric: {m}, direction: {d}}}" for m, d in s.objectives)
    return f"""apiVersion: autotuner/v1
kind: TuningSpec
metadata: {{name: {s.name}}}
spec:
  model: {{id: {s.model}}}
  engine: {{name: replay, args: {{table: {s.name}.csv, gpu: {s.gpu}}}}}
  search:
    strategy: {strategy}
    maxExperiments: {budget}
    seed: {seed}
    parameters:
{params}
  workload:
    dataset: {{kind: synthetic, input: {{mean: {s.input_mean}}}, output: {{mean: {s.output_mean}}}}}
    load: {{concurrency: [{", ".join(map(str, s.levels))}]}}
  slo:
{slo}
  objectives:
{objectives}
"""


def main() -> None:
    SURFACES.mkdir(parents=True, exist_ok=True)
    for s in ALL:
        rows = measure(s)
        columns = [*s.params, "concurrency", "state", "failure_kind", "failure_reason", "default", *METRICS]
        with (SURFACES / f"{s.name}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns, restval="")
            w.writeheader()
            w.writerows(rows)
        (SURFACES / f"{s.name}.yaml").write_text(spec_yaml(s), encoding="utf-8")
        configs = {tuple(r[n] for n in s.params) for r in rows}
        failed = sum(r["state"] == "FAILED" for r in rows)
        print(f"{s.name}: {len(configs)} configurations, {failed} fail to start")


if __name__ == "__main__":
    main()
