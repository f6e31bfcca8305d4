"""The one metric vocabulary (docs/architecture.md section 5).

Whatever measured a load point — our load generator, genai-bench, ``vllm bench serve`` — its
numbers are stored under these names, so SLOs and objectives can name them and the report can
plot them. Latencies are milliseconds, throughputs are per second.
"""

from __future__ import annotations

from typing import Literal

LATENCY_BASES = ("ttft", "tpot", "itl", "e2e")
STATS = ("mean", "p50", "p90", "p95", "p99")

LATENCY_METRICS: tuple[str, ...] = tuple(f"{b}_{s}_ms" for b in LATENCY_BASES for s in STATS)

RATE_METRICS: tuple[str, ...] = (
    "request_throughput",
    "output_throughput",
    "total_throughput",
    "output_throughput_per_gpu",
    "total_throughput_per_gpu",
    "goodput",
    "goodput_per_gpu",
)

COUNT_METRICS: tuple[str, ...] = (
    "slo_attainment",
    "completed",
    "failed",
    "error_rate",
    "duration_s",
)

#: The client's own lateness against an open-loop schedule (request-rate levels only): actual
#: send time minus scheduled send time, wall-clock milliseconds. A high value means the client,
#: not the server, lowered the offered load.
CLIENT_METRICS: tuple[str, ...] = tuple(f"schedule_delay_{s}_ms" for s in STATS)

ALL_METRICS: tuple[str, ...] = LATENCY_METRICS + RATE_METRICS + COUNT_METRICS + CLIENT_METRICS

#: Which way is better for each metric, used for defaults and sanity checks of objectives.
NATURAL_DIRECTION: dict[str, Literal["minimize", "maximize"]] = {
    **{m: "minimize" for m in LATENCY_METRICS},
    **{m: "maximize" for m in RATE_METRICS},
    "slo_attainment": "maximize",
    "completed": "maximize",
    "failed": "minimize",
    "error_rate": "minimize",
    "duration_s": "minimize",
    **{m: "minimize" for m in CLIENT_METRICS},
}

#: Metrics an SLO may bound: the per-request latencies, plus error rate.
SLO_METRICS: tuple[str, ...] = (*LATENCY_METRICS, "error_rate")

#: Latency bases whose per-request value decides whether one request met the SLOs (goodput).
PER_REQUEST_BASE = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2e": "e2e_ms", "itl": "itl_ms"}
