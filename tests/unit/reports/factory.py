"""Realistic result folders for the report's tests and its build benchmark.

Real studies take minutes to hours; the report must be developed and tested against data that
*looks* like theirs: throughput rising with ``max-num-seqs`` with diminishing returns, TTFT
rising with load (sharply once the batch is full), fp8 KV cache and tensor parallelism trading
per-GPU efficiency for headroom, some configurations running out of memory, two generations of a
spec on two engine versions, and the engine's default configuration measured as the baseline.

Every record is a :class:`specs.records.ExperimentRecord`, scored with :mod:`specs.slo` exactly as
the study scores it (summary point, verdicts, soft-SLO penalty, hard-SLO constraints), and
written as the results store writes it, so the builder reads the same bytes it will read in
production. The builder never imports this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from specs.model import Objective, SloBound
from specs.ranking import best, pareto_front
from specs.records import (
    Condition,
    ExperimentRecord,
    FailureRecord,
    GpuRecord,
    LoadPointRecord,
    ObjectiveRecord,
    StatusRecord,
)
from specs.slo import constraint_values, evaluate, hard_ok, objective_values, pick_summary

TOOL_VERSION = "0.1.0"
T0 = "2026-11-20T08:00:00+00:00"

#: the search space every generated spec explores (axis name -> values)
SPACE: dict[str, list[Any]] = {
    "max-num-seqs": [16, 32, 64, 128, 256],
    "max-num-batched-tokens": [2048, 4096, 8192],
    "enable-chunked-prefill": [True, False],
    "quant.kvcache_dtype": ["auto", "fp8_e5m2"],
    "parallel.tp": [1, 2],
}
#: the engine's defaults, measured as the baseline (config ``{}``)
DEFAULTS: dict[str, Any] = {
    "max-num-seqs": 256,
    "max-num-batched-tokens": 2048,
    "enable-chunked-prefill": True,
    "quant.kvcache_dtype": "auto",
    "parallel.tp": 1,
}

OOM_LOG = (
    "INFO 11-20 08:01:12 model_runner.py:1072] Loading model weights took 14.99 GB\n"
    "INFO 11-20 08:01:15 worker.py:237] Memory profiling takes 2.71 seconds\n"
    "ERROR 11-20 08:01:16 engine.py:366] CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 has a total "
    "capacity of 79.10 GiB of which 1.95 GiB is free.\n"
    "torch.OutOfMemoryError: CUDA out of memory.\n"
)


@dataclass
class SpecPlan:
    """What one generated spec looks like."""

    name: str
    experiments: int = 24
    title: str | None = None
    engine: str = "vllm"
    #: engine version of each generation, oldest first: one entry per generation
    versions: tuple[str, ...] = ("0.6.3", "0.7.0")
    gpu_model: str = "NVIDIA H100 80GB HBM3"
    objectives: tuple[tuple[str, str], ...] = (("output_throughput_per_gpu", "maximize"),)
    slo: dict[str, SloBound] = field(
        default_factory=lambda: {
            "ttft_p90_ms": SloBound(max=800.0),
            "tpot_p99_ms": SloBound(max=60.0, hard=False, weight=2.0),
        }
    )
    loads: tuple[int, ...] = (4, 16, 64)
    phase: str = "done"  # done | running | stalled
    baseline: bool = True
    #: probability that a run fails for reasons other than memory (timeouts, crashes)
    flaky: float = 0.05
    seed: int = 0
    #: extra values per axis, to put hostile strings into parameter values
    extra_values: dict[str, list[Any]] = field(default_factory=dict)


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _timestamp(minutes: float) -> str:
    return (datetime.fromisoformat(T0) + timedelta(minutes=minutes)).isoformat(timespec="seconds")


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **config}


def _oom(c: dict[str, Any]) -> bool:
    """Large batches with a full-precision KV cache on one GPU do not fit."""
    return (
        c["max-num-seqs"] * c["max-num-batched-tokens"] >= 128 * 8192
        and c["quant.kvcache_dtype"] == "auto"
        and c["parallel.tp"] == 1
    )


def measure(
    config: dict[str, Any], load: int, *, version_gain: float, rng: random.Random
) -> dict[str, float]:
    """One load point of a plausible engine: a saturating throughput curve and a TTFT that grows
    with load, sharply once more requests arrive than the batch holds."""
    c = _resolved(config)
    seqs, tokens, tp = c["max-num-seqs"], c["max-num-batched-tokens"], c["parallel.tp"]
    fp8 = c["quant.kvcache_dtype"] != "auto"
    chunked = bool(c["enable-chunked-prefill"])
    running = min(load, seqs)
    capacity = 5200.0 * (1 - math.exp(-seqs / 70)) * (1.12 if fp8 else 1.0) * (1.75 if tp == 2 else 1.0)
    capacity *= version_gain * (1.0 + 0.04 * math.log2(tokens / 2048))
    throughput = capacity * running / (running + 12) * rng.uniform(0.96, 1.04)
    queue = max(0.0, load - seqs) / seqs
    prefill = 60.0 * (2048 / tokens) ** 0.3 * (0.8 if chunked else 1.0) / (1.4 if tp == 2 else 1.0)
    if not chunked and tokens <= 2048:
        prefill *= 6  # a whole prompt must fit the step's token budget: prefills run one by one
    # prompts of running requests compete for the per-step token budget; without chunked prefill a
    # long prefill also stalls every decode behind it
    contention = (1 + running * 1024 / tokens / 40) * (1 if chunked else 1 + running / 48)
    ttft_p50 = prefill * (1 + running / 24) * contention * (1 + 3.5 * queue) * rng.uniform(0.93, 1.07)
    tpot_p50 = (
        (9.0 + running * (0.42 if not chunked else 0.36))
        / (1.5 if tp == 2 else 1.0)
        * rng.uniform(0.95, 1.05)
    )
    requests = 200.0
    duration = requests * 256 / max(throughput, 1.0)
    within = max(0.0, min(1.0, 1.12 - 0.3 * (ttft_p50 * 1.9 / 800) - 0.2 * max(0.0, tpot_p50 * 1.7 / 60 - 1)))
    m: dict[str, float] = {
        "completed": requests,
        "failed": 0.0,
        "error_rate": 0.0,
        "duration_s": round(duration, 3),
        "request_throughput": round(requests / duration, 4),
        "output_throughput": round(throughput, 3),
        "total_throughput": round(throughput * 5, 3),
        "output_throughput_per_gpu": round(throughput / tp, 3),
        "total_throughput_per_gpu": round(throughput * 5 / tp, 3),
        "slo_attainment": round(within, 4),
        "goodput": round(within * requests / duration, 4),
        "goodput_per_gpu": round(within * requests / duration / tp, 4),
    }
    for base, p50 in (("ttft", ttft_p50), ("tpot", tpot_p50), ("itl", tpot_p50 * 0.97)):
        for stat, factor in (("mean", 1.08), ("p50", 1.0), ("p90", 1.9), ("p95", 2.3), ("p99", 3.1)):
            m[f"{base}_{stat}_ms"] = round(p50 * factor, 3)
    for stat in ("mean", "p50", "p90", "p95", "p99"):
        m[f"e2e_{stat}_ms"] = round(m[f"ttft_{stat}_ms"] + 255 * m[f"tpot_{stat}_ms"], 3)
    return m


def _command(engine: str, config: dict[str, Any]) -> list[str]:
    argv = [engine, "serve", "meta-llama/Llama-3.1-8B-Instruct", "--host", "0.0.0.0", "--port", "8000"]
    for key, value in config.items():
        flag = {"quant.kvcache_dtype": "kv-cache-dtype", "parallel.tp": "tensor-parallel-size"}.get(key, key)
        if isinstance(value, bool):
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            argv += [f"--{flag}", str(value)]
    return argv


def make_record(
    plan: SpecPlan,
    number: int,
    config: dict[str, Any],
    *,
    generation: str,
    version: str,
    version_gain: float,
    baseline: bool,
    rng: random.Random,
) -> ExperimentRecord:
    """Measure ``config`` at every load of the plan and score it as the study does."""
    objectives = [Objective(metric=m, direction=d) for m, d in plan.objectives]
    resolved = _resolved(config)
    tp = resolved["parallel.tp"]
    started = number * 6.0
    failure: FailureRecord | None = None
    state = "COMPLETE"
    timings: dict[str, float] = {"lease_wait_s": 0.0}
    if _oom(resolved):
        state = "FAILED"
        failure = FailureRecord(
            kind="oom",
            reason="the engine ran out of GPU memory while starting",
            log_tail=OOM_LOG,
            exit_code=1,
        )
        timings |= {"deploy_s": round(rng.uniform(1, 3), 3), "ready_s": round(rng.uniform(20, 40), 3)}
    elif not baseline and rng.random() < plan.flaky:
        state = "FAILED"
        failure = FailureRecord(
            kind="readiness_timeout",
            reason="the engine was not ready within 900 s (startupTimeout)",
            log_tail="INFO waiting for /health ...\nINFO waiting for /health ...\n",
        )
        timings |= {"deploy_s": round(rng.uniform(1, 3), 3), "ready_s": 900.0}
    points: list[LoadPointRecord] = []
    if state == "COMPLETE":
        for load in plan.loads:
            metrics = measure(config, load, version_gain=version_gain, rng=rng)
            verdicts = evaluate(metrics, plan.slo)
            points.append(
                LoadPointRecord(
                    load_kind="concurrency",
                    load_value=float(load),
                    metrics=dict(metrics),
                    slo=[v.to_dict() for v in verdicts],
                    feasible=hard_ok(verdicts),
                )
            )
        timings |= {
            "deploy_s": round(rng.uniform(1, 3), 3),
            "ready_s": round(rng.uniform(25, 60), 3),
            "benchmark_s": round(sum(p.metrics["duration_s"] or 0 for p in points), 3),
        }
    timings |= {"teardown_s": round(rng.uniform(0.5, 2), 3)}
    timings["total_s"] = round(sum(timings.values()), 3)
    idx, feasible = pick_summary([p.metrics for p in points], plan.slo)
    summary = dict(points[idx].metrics) if idx is not None else {}
    verdicts = evaluate(summary, plan.slo) if idx is not None else []
    objective_records: list[ObjectiveRecord] = []
    if state == "COMPLETE":
        values = objective_values(summary, objectives, verdicts)
        objective_records = [
            ObjectiveRecord(
                metric=o.metric, direction=o.resolved_direction, raw=summary.get(o.metric), value=v
            )
            for o, v in zip(objectives, values, strict=True)
        ]
    command = _command(plan.engine, config)
    return ExperimentRecord(
        tool_version=TOOL_VERSION,
        id=f"{number:04d}",
        spec=plan.name,
        generation=generation,
        trial=None if baseline else number,
        state=state,
        simulated=plan.engine == "sim",
        baseline=baseline,
        config=dict(config),
        config_hash=_hex(json.dumps([resolved, version], sort_keys=True, default=str)),
        engine_flags={k: v for k, v in config.items()},
        command=command,
        engine={
            "name": plan.engine,
            "version": version,
            "image": f"vllm/vllm-openai:v{version}",
            "variant": None,
        },
        backend={"kind": "docker"},
        model={"id": "meta-llama/Llama-3.1-8B-Instruct", "revision": "main"},
        gpu=GpuRecord(
            model=plan.gpu_model, count=tp, ids=list(range(tp)), driver="550.54.15", memory_mib=81559
        ),
        workload={
            "fingerprint": _hex(plan.name),
            "dataset": "synthetic",
            "input_mean": 1024,
            "output_mean": 256,
        },
        load_points=points,
        summary_index=idx,
        feasible=feasible if state == "COMPLETE" else False,
        summary=summary,
        slo=[v.to_dict() for v in verdicts],
        objectives=objective_records,
        constraints=constraint_values(verdicts) if state == "COMPLETE" else [],
        failure=failure,
        timings=timings,
        started_at=_timestamp(started),
        finished_at=_timestamp(started + 5.5),
    )


def make_records(plan: SpecPlan) -> list[ExperimentRecord]:
    """The plan's experiments in id order: per generation a baseline first, then sampled
    configurations (distinct within a generation while the space allows)."""
    rng = random.Random(f"{plan.name}/{plan.seed}")
    space = {k: list(v) + plan.extra_values.get(k, []) for k, v in SPACE.items()}
    generations = len(plan.versions)
    per_gen = [plan.experiments // generations] * generations
    per_gen[-1] += plan.experiments - sum(per_gen)
    records: list[ExperimentRecord] = []
    number = 0
    for g, (version, count) in enumerate(zip(plan.versions, per_gen, strict=True)):
        generation = _hex(f"{plan.name}/generation/{g}")
        gain = 1.0 + 0.08 * g
        seen: set[str] = set()
        for i in range(count):
            number += 1
            is_baseline = plan.baseline and i == 0
            if is_baseline:
                config: dict[str, Any] = {}
            else:
                for _ in range(20):
                    config = {k: rng.choice(v) for k, v in space.items()}
                    if g == 0:  # the first generation did not search parallelism yet
                        config.pop("parallel.tp")
                    key = json.dumps(config, sort_keys=True, default=str)
                    if key not in seen:
                        break
                seen.add(key)
            records.append(
                make_record(
                    plan,
                    number,
                    config,
                    generation=generation,
                    version=version,
                    version_gain=gain,
                    baseline=is_baseline,
                    rng=rng,
                )
            )
    return records


def make_status(plan: SpecPlan, records: list[ExperimentRecord]) -> StatusRecord:
    generation = records[-1].generation if records else _hex(f"{plan.name}/generation/0")
    current = [r for r in records if r.generation == generation]
    when = _timestamp(len(records) * 6.0)
    running = plan.phase == "running"
    stalled = plan.phase == "stalled"
    message = {
        "done": f"study complete: {len(current)} experiments",
        "running": f"{len(current)} experiments so far",
        "stalled": "spec is invalid: spec.search.parameters.max-num-seq: unknown flag "
        "(did you mean max-num-seqs?)",
    }[plan.phase]
    reason = {"done": "StudyComplete", "running": "Progressing", "stalled": "InvalidSpec"}[plan.phase]
    conditions = [
        Condition(
            type="Ready",
            status="True" if plan.phase == "done" else "False",
            reason=reason,
            message=message,
            last_transition_time=when,
        ),
        Condition(
            type="Reconciling",
            status="True" if running else "False",
            reason="Progressing" if running else reason,
            message=message if running else "",
            last_transition_time=when,
        ),
        Condition(
            type="Stalled",
            status="True" if stalled else "False",
            reason=reason if stalled else "AsExpected",
            message=message if stalled else "",
            last_transition_time=when,
        ),
    ]
    chosen = pareto_front(current) if len(plan.objectives) > 1 else []
    if not chosen:
        b = best(current)
        chosen = [b] if b else []
    return StatusRecord(
        tool_version=TOOL_VERSION,
        spec=plan.name,
        title=plan.title,
        engine=plan.engine,
        conditions=conditions,
        observed_generation=generation,
        last_applied_revision=_hex(f"{plan.name}/revision")[:12],
        spec_file=f"specs/{plan.name}.yaml",
        counts={
            "total": len(current),
            "complete": sum(r.state == "COMPLETE" for r in current),
            "failed": sum(r.state == "FAILED" for r in current),
            "reused": 0,
            "feasible": sum(bool(r.state == "COMPLETE" and r.feasible) for r in current),
        },
        max_experiments=max(len(current), (len(current) * 3) // 2 if running else len(current)),
        objectives=[{"metric": m, "direction": d} for m, d in plan.objectives],
        best=[
            {
                "experiment": r.id,
                "config": r.config,
                "objectives": {o.metric: o.raw for o in r.objectives},
                "summary": {
                    k: r.summary.get(k)
                    for k in ("output_throughput", "ttft_p90_ms", "tpot_p90_ms", "goodput")
                },
            }
            for r in chosen
        ],
        updated_at=when,
    )


def best_files(plan: SpecPlan, record: ExperimentRecord) -> dict[str, str]:
    """``best/`` as the study writes it (simplified: same file names and roles)."""
    image = str(record.engine.get("image"))
    args = record.command[2:]
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: " + plan.name + "\nspec:\n  replicas: 1\n"
        "  template:\n    spec:\n      containers:\n      - name: engine\n        image: "
        + image
        + "\n        args:\n"
        + "".join(f"        - {json.dumps(a)}\n" for a in args)
    )
    return {
        "command.sh": f"#!/bin/sh\n# Best configuration of {plan.name} (experiment {record.id}).\n"
        + shlex.join(record.command)
        + "\n",
        "docker-run.sh": "#!/bin/sh\n"
        + shlex.join(["docker", "run", "--rm", "--gpus", "all", "-p", "8000:8000", image, *args])
        + "\n",
        "deployment.yaml": deployment,
        "engine-args.json": json.dumps(
            {
                "spec": plan.name,
                "experiment": record.id,
                "generation": record.generation,
                "config": record.config,
                "argv": record.command,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n",
    }


def _write(path: Path, data: dict[str, Any] | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data, indent=2, sort_keys=True) + "\n"
    path.write_text(text, encoding="utf-8")


def write_spec(root: Path, plan: SpecPlan, *, folder: str | None = None) -> list[ExperimentRecord]:
    """Write ``root/<folder or name>/`` (status, experiments, best) and return the records."""
    records = make_records(plan)
    spec_dir = root / (folder or plan.name)
    for r in records:
        _write(spec_dir / "experiments" / f"{r.id}.json", r.dump())
    _write(spec_dir / "status.json", make_status(plan, records).dump())
    winner = best([r for r in records if r.generation == records[-1].generation]) if records else None
    if winner is not None:
        for name, content in best_files(plan, winner).items():
            _write(spec_dir / "best" / name, content)
    return records


def add_experiment(
    root: Path, plan: SpecPlan, config: dict[str, Any], *, folder: str | None = None
) -> ExperimentRecord:
    """Append one experiment of the plan's latest generation, as a running study would."""
    spec_dir = root / (folder or plan.name)
    existing = sorted((spec_dir / "experiments").glob("*.json"))
    last = ExperimentRecord.model_validate_json(existing[-1].read_bytes())
    rng = random.Random(f"{plan.name}/{len(existing)}")
    record = make_record(
        plan,
        len(existing) + 1,
        config,
        generation=last.generation,
        version=str(last.engine["version"]),
        version_gain=1.0 + 0.08 * (len(plan.versions) - 1),
        baseline=False,
        rng=rng,
    )
    _write(spec_dir / "experiments" / f"{record.id}.json", record.dump())
    return record


def demo_plans(count: int = 3, experiments: int = 24) -> list[SpecPlan]:
    """A varied set: one objective, two objectives (a Pareto front), one still running."""
    kinds = [
        dict(title="Llama 3.1 8B on H100, chat traffic"),
        dict(
            objectives=(("output_throughput_per_gpu", "maximize"), ("ttft_p90_ms", "minimize")),
            title="Throughput against TTFT",
        ),
        dict(phase="running", title="Still running"),
        dict(
            objectives=(
                ("output_throughput_per_gpu", "maximize"),
                ("ttft_p90_ms", "minimize"),
                ("tpot_p90_ms", "minimize"),
            ),
            title="Three objectives",
        ),
    ]
    plans = []
    for i in range(count):
        extra = kinds[i % len(kinds)]
        plans.append(SpecPlan(name=f"spec-{i:03d}", experiments=experiments, seed=i, **extra))  # type: ignore[arg-type]
    return plans


def write_results(root: Path, plans: list[SpecPlan]) -> dict[str, list[ExperimentRecord]]:
    return {p.name: write_spec(root, p) for p in plans}
