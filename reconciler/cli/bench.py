"""``autotuner bench``: the load generator alone, against any OpenAI-compatible endpoint.

Meant to be useful on its own, like ``vllm bench serve`` or genai-bench: load levels by
concurrency (closed loop) or request rate (open loop), synthetic or file prompts, SLOs that drive
goodput, a capacity search, and output in exactly the metric names the daemon stores
(docs/architecture.md section 5). ``--import`` converts another tool's results into the same output,
so the two can be compared line by line.

User mistakes (bad URL, unreachable server, bad SLO syntax, unreadable dataset) end with exit 1
and one line on stderr, never a traceback. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.adapters import import_results
from backends.loadgen import (
    LoadOptions,
    TargetConfig,
    fetch_model,
    find_capacity,
    run_load_point,
    run_sync,
)
from backends.loadgen.target import PromptLike
from backends.workloads.bench import bench_prompts
from reconciler.cli._bench_output import emit, label, progress
from reconciler.cli._common import fail
from specs.errors import AutotunerError, TransientError, UserError
from specs.records import LoadPointRecord
from specs.slo import parse_slo_text


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="run the load generator against an OpenAI-compatible endpoint",
        description="Stream requests at an OpenAI-compatible server and print the metrics of each "
        "load level (TTFT, TPOT, ITL, E2E percentiles, throughputs, goodput). Or convert another "
        "tool's results with --import.",
    )
    t = p.add_argument_group("target")
    t.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8000 (with or without /v1)")
    t.add_argument("--model", help="served model name (default: the first of GET /v1/models)")
    t.add_argument("--api", choices=["completions", "chat"], default="completions", help="endpoint to call")
    t.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra HTTP header, repeatable (e.g. an Authorization header)",
    )
    t.add_argument(
        "--ignore-eos", action="store_true", help="ask for exactly max_tokens (vLLM/SGLang extension)"
    )

    g = p.add_argument_group("load")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--concurrency", metavar="N,N,...", help="closed-loop levels (default 1)")
    how.add_argument("--rate", metavar="R,R,...", help="open-loop levels in requests/s; 'inf' = all at once")
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of arrivals (1 = Poisson)")
    g.add_argument(
        "--max-concurrency", type=int, help="with --rate: cap on requests in flight (like vllm bench serve)"
    )
    g.add_argument(
        "--capacity",
        action="store_true",
        help="bisect for the highest level meeting the SLOs, between the lowest and highest level "
        "given (default concurrency 1..256)",
    )
    g.add_argument("--max-steps", type=int, default=6, help="capacity: bisection steps after both ends")
    g.add_argument("--tolerance", type=float, default=0.1, help="capacity: stop when high/low - 1 <= this")
    g.add_argument("--requests", type=int, default=100, help="measured requests per level (default 100)")
    g.add_argument("--warmup", type=int, default=4, help="uncounted warm-up requests per level (default 4)")
    g.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    g.add_argument("--max-duration", type=float, help="stop a level after this many seconds")
    g.add_argument("--seed", type=int, default=0, help="seed of prompts and arrivals")
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="load generator processes, each with its own event loop and connections, sharing one "
        "schedule (default: from the free cores and the concurrency, 64 streams per process)",
    )

    s = p.add_argument_group("SLOs and GPUs")
    s.add_argument(
        "--slo",
        metavar="'METRIC<=MAX,...'",
        help="SLOs for goodput and capacity, e.g. 'ttft_p90_ms<=500,tpot_p99_ms<=50,error_rate<=0.01'",
    )
    s.add_argument("--gpus", type=int, help="GPUs serving the endpoint, for per-GPU metrics (default 1)")

    d = p.add_argument_group("prompts")
    d.add_argument("--input-len", type=int, default=128, help="synthetic prompt length in tokens")
    d.add_argument("--output-len", type=int, default=128, help="output tokens asked for")
    d.add_argument("--input-stddev", type=float, default=0.0)
    d.add_argument("--output-stddev", type=float, default=0.0)
    d.add_argument("--dataset", metavar="FILE", help="prompts from a file instead of synthetic ones")
    d.add_argument("--dataset-format", choices=["jsonl", "csv", "sharegpt"], default="jsonl")
    d.add_argument("--prompt-field", default="prompt", help="field holding the prompt (jsonl, csv)")

    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="machine output: {load_points: [...]} in metric names")
    o.add_argument(
        "--import",
        dest="import_",
        nargs=2,
        metavar=("KIND", "PATH"),
        help="convert results instead of measuring: 'genai-bench DIR' or 'vllm-bench FILE'",
    )
    return p


# ---------------------------------------------------------------------------------------- parsing


def parse_levels(text: str, what: str, *, integer: bool) -> list[float]:
    """``"1,8,32"`` -> ``[1, 8, 32]``; ``inf`` allowed for rates. UserError on anything else."""
    levels: list[float] = []
    for part in text.split(","):
        item = part.strip()
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"--{what}: {item!r} is not a number (expected e.g. 1,8,32)") from None
        if integer and not (value.is_integer() and value >= 1):
            raise UserError(f"--{what}: {item!r} is not a positive whole number")
        if not value > 0 or math.isnan(value):
            raise UserError(f"--{what}: levels must be > 0, got {item!r}")
        levels.append(value)
    if len(set(levels)) != len(levels):
        raise UserError(f"--{what}: levels must be distinct")
    return levels


def _headers(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UserError(f"--header: {item!r} is not 'NAME: VALUE'")
        out[name.strip()] = value.strip()
    return out


def _check_positive(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--requests", args.requests),
        ("--input-len", args.input_len),
        ("--output-len", args.output_len),
        ("--max-steps", args.max_steps),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be > 0, got {args.timeout}")
    if args.max_duration is not None and not args.max_duration > 0:
        raise UserError(f"--max-duration must be > 0, got {args.max_duration}")
    if not args.burstiness > 0:
        raise UserError(f"--burstiness must be > 0, got {args.burstiness}")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise UserError(f"--max-concurrency must be at least 1, got {args.max_concurrency}")
    if args.gpus is not None and args.gpus < 0:
        raise UserError(f"--gpus must be >= 0, got {args.gpus}")
    if not 0 < args.tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 1, got {args.tolerance}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")


# ---------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    try:
        if args.import_:
            return _import(args)
        return _bench(args)
    except AutotunerError as exc:
        # one line, no traceback: the hint joins the message
        return fail(f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""))


def _import(args: argparse.Namespace) -> int:
    kind, path = args.import_
    points = import_results(kind, Path(path), gpus=args.gpus)
    emit(args, points, {"source": kind, "path": str(path)})
    return 0


def _bench(args: argparse.Namespace) -> int:
    if not args.url:
        return fail("--url is required (or use --import KIND PATH)")
    _check_positive(args)
    slo = parse_slo_text(args.slo)
    kind = "request_rate" if args.rate else "concurrency"
    levels = (
        parse_levels(args.rate, "rate", integer=False)
        if args.rate
        else (parse_levels(args.concurrency, "concurrency", integer=True) if args.concurrency else [1.0])
    )
    if args.max_concurrency is not None and kind != "request_rate":
        raise UserError("--max-concurrency only applies with --rate (use --concurrency for closed loop)")
    target = TargetConfig(
        args.url, model=args.model, api=args.api, ignore_eos=args.ignore_eos, headers=_headers(args.header)
    )
    target = _preflight(target)
    requests, described = bench_prompts(
        args.requests,
        seed=args.seed,
        input_len=args.input_len,
        output_len=args.output_len,
        input_stddev=args.input_stddev,
        output_stddev=args.output_stddev,
        dataset=Path(args.dataset) if args.dataset else None,
        dataset_format=args.dataset_format,
        prompt_field=args.prompt_field,
    )
    gpus = 1 if args.gpus is None else args.gpus
    header: dict[str, Any] = {
        "url": target.base_url,
        "model": target.model,
        "api": target.api,
        "prompts": described,
    }
    options = LoadOptions(
        burstiness=args.burstiness,
        warmup=args.warmup,
        seed=args.seed,
        gpus=gpus,
        slo=slo,
        timeout_s=args.timeout,
        max_duration_s=args.max_duration,
        workers=args.workers,
    )
    if args.capacity:
        return _capacity(args, target, requests, kind, levels, options, header)
    points = []
    for level in levels:
        label_ = label(kind, level)
        points.append(
            run_sync(
                run_load_point(
                    target,
                    requests,
                    concurrency=int(level) if kind == "concurrency" else args.max_concurrency,
                    request_rate=level if kind == "request_rate" else None,
                    options=options,
                    progress=progress(label_),
                )
            )
        )
    emit(args, points, header)
    return 0


def _capacity(
    args: argparse.Namespace,
    target: TargetConfig,
    requests: Sequence[PromptLike],
    kind: str,
    levels: list[float],
    options: LoadOptions,
    header: dict[str, Any],
) -> int:
    if kind == "request_rate":
        if len(levels) < 2 or any(math.isinf(x) for x in levels):
            raise UserError("--capacity with --rate needs two finite rates: LOW,HIGH (e.g. --rate 1,64)")
        low, high = min(levels), max(levels)
    else:
        low, high = (min(levels), max(levels)) if len(levels) >= 2 else (1.0, 256.0)
    if args.max_concurrency is not None:
        raise UserError("--max-concurrency cannot be combined with --capacity")

    def on_point(point: LoadPointRecord, ok: bool, why: list[str]) -> None:
        verdict = "meets the SLOs" if ok else "misses: " + "; ".join(why)
        print(f"{label(kind, point.load_value)}: {verdict}", file=sys.stderr, flush=True)

    result = run_sync(
        find_capacity(
            target,
            requests,
            by="concurrency" if kind == "concurrency" else "rate",
            low=low,
            high=high,
            max_steps=args.max_steps,
            tolerance=args.tolerance,
            progress=lambda level: progress(label(kind, level)),
            options=options,
            on_point=on_point,
        )
    )
    order = sorted(range(len(result.points)), key=lambda i: result.points[i].load_value)
    header["capacity"] = {
        "by": result.by,
        "capacity": result.capacity,
        "summary": result.summary,
        "levels": [
            {
                "load_value": result.points[i].load_value,
                "passed": result.passed[i],
                "reasons": result.reasons[i],
            }
            for i in order
        ],
    }
    emit(args, [result.points[i] for i in order], header)
    return 0


def _preflight(target: TargetConfig) -> TargetConfig:
    """Fail fast on an unreachable server, and learn the model name when none was given."""
    try:
        model = run_sync(fetch_model(target, timeout_s=10.0))
    except TransientError:
        raise
    except UserError:
        if target.model is None:
            raise
        return target  # the server lists no models but we were told which one to use
    if target.model is not None:
        return target
    return dataclasses.replace(target, model=model)
