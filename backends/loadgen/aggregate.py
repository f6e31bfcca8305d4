"""Request records in, one load point's metrics out (docs/architecture.md section 5), as a pure function.

Every formula of the metric vocabulary lives here and nowhere else, so it can be tested on
hand-built records and the load generator's network code never computes a metric.

Definitions (per load point, latencies from *successful* requests only):

* ``ttft`` = first content chunk received − request sent
* ``e2e``  = last byte received − request sent
* ``tpot`` = (e2e − ttft) / (output_tokens − 1), only for requests with more than one token
* ``itl``  = every gap between consecutive content chunks, pooled over requests (a chunk that
  carries several tokens is one sample, as in vLLM)
* throughputs divide by ``duration_s`` = first send to last completion (failed requests
  included: they occupied the load point too)
* a request is *good* when it succeeded and, for every SLO on a latency base, its own value of
  that base is within the bound (its ttft, tpot, e2e; for ITL its *largest* gap, because an ITL
  bound promises that no stall is longer). A base with no value for that request (tpot or itl of
  a one-token answer) does not disqualify it. Every SLO counts here, hard or soft; without SLOs
  every successful request is good.
* ``goodput`` = good requests / duration; ``slo_attainment`` = good / all sent (failed ones are
  not good); ``error_rate`` = failed / (completed + failed)

Anything that cannot be computed (no successes, zero duration, no GPUs given) is None, never 0
and never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Literal

from backends.loadgen.records import RequestRecord
from backends.loadgen.stats import summarize
from backends.measure import LoadPointResult
from specs.metrics import LATENCY_BASES, PER_REQUEST_BASE
from specs.model import SloBound


def request_latencies(rec: RequestRecord) -> dict[str, float | None]:
    """Per-request values in seconds, keyed by latency base (``ttft``, ``tpot``, ``itl``, ``e2e``);
    for ``itl`` the request's largest gap. These are what goodput compares with SLO bounds."""
    first = rec.first_token_time
    if not rec.ok or first is None or rec.end_time is None:
        return dict.fromkeys(LATENCY_BASES)
    ttft = first - rec.send_time
    e2e = rec.end_time - rec.send_time
    out = rec.output_tokens
    tpot = (e2e - ttft) / (out - 1) if out > 1 else None
    times = rec.chunk_times
    itl_max = max(b - a for a, b in pairwise(times)) if len(times) > 1 else None
    return {"ttft": ttft, "tpot": tpot, "itl": itl_max, "e2e": e2e}


def _slo_base(metric: str) -> str | None:
    """``ttft_p90_ms`` -> ``ttft``; None for SLOs that are not per-request (``error_rate``)."""
    base = metric.split("_", 1)[0]
    return base if base in PER_REQUEST_BASE and metric.endswith("_ms") else None


def is_good(rec: RequestRecord, slo: Mapping[str, SloBound]) -> bool:
    """Did this request succeed and meet every per-request SLO? (see the module docstring)"""
    if not rec.ok or rec.first_token_time is None:
        return False
    values = request_latencies(rec)
    for metric, bound in slo.items():
        base = _slo_base(metric)
        if base is None:
            continue
        value = values[base]
        if value is not None and value * 1000.0 > bound.max:
            return False
    return True


def _rate(count: float, duration: float | None) -> float | None:
    return count / duration if duration else None


def _per_gpu(value: float | None, gpus: int) -> float | None:
    return value / gpus if value is not None and gpus > 0 else None


def aggregate(
    records: Iterable[RequestRecord],
    *,
    load_kind: Literal["concurrency", "request_rate"],
    load_value: float,
    gpus: int = 1,
    slo: Mapping[str, SloBound] | None = None,
    notes: Sequence[str] = (),
) -> LoadPointResult:
    """Compute every metric of section 5 from the measured (non-warm-up) requests of one level."""
    slo = dict(slo or {})
    recs = list(records)
    # a "success" without a single content chunk has no TTFT: it counts as failed (no_content)
    ok = [r for r in recs if r.ok and r.first_token_time is not None]
    failed = [r for r in recs if not (r.ok and r.first_token_time is not None)]
    notes_out = list(notes)

    ttft: list[float] = []
    e2e: list[float] = []
    tpot: list[float] = []
    itl: list[float] = []
    for r in ok:
        values = request_latencies(r)
        ttft.append(values["ttft"] or 0.0)
        e2e.append(values["e2e"] or 0.0)
        if values["tpot"] is not None:
            tpot.append(values["tpot"])
        times = r.chunk_times
        itl.extend(b - a for a, b in pairwise(times))

    sends = [r.send_time for r in recs]
    ends = [r.end_time for r in recs if r.end_time is not None]
    duration = max(ends) - min(sends) if sends and ends else None
    if duration is not None and duration <= 0:
        duration = None

    out_tokens = sum(r.output_tokens for r in ok)
    in_counts = [r.input_tokens for r in ok]
    in_tokens = sum(c for c in in_counts if c is not None)
    input_known = all(c is not None for c in in_counts)

    no_usage = sum(1 for r in ok if r.usage_output_tokens is None)
    if no_usage:
        notes_out.append(
            f"output token counts of {no_usage} of {len(ok)} requests are counted streamed content "
            "chunks: the server reported no usage (a chunk may carry several tokens)"
        )
    from_dataset = sum(1 for r in ok if r.usage_input_tokens is None and r.expected_input_tokens is not None)
    if from_dataset:
        notes_out.append(f"input token counts of {from_dataset} requests come from the dataset, not usage")
    if ok and not input_known:
        notes_out.append("total_throughput unknown: some input token counts are neither reported nor known")
    if not slo:
        notes_out.append("no SLOs given: goodput counts every successful request")

    good = sum(1 for r in ok if is_good(r, slo))
    sent = len(ok) + len(failed)

    metrics: dict[str, float | None] = {}
    metrics.update(summarize(ttft, "ttft"))
    metrics.update(summarize(tpot, "tpot"))
    metrics.update(summarize(itl, "itl"))
    metrics.update(summarize(e2e, "e2e"))
    request_throughput = _rate(len(ok), duration)
    output_throughput = _rate(out_tokens, duration)
    total_throughput = _rate(in_tokens + out_tokens, duration) if input_known else None
    goodput = _rate(good, duration)
    metrics.update(
        {
            "request_throughput": request_throughput,
            "output_throughput": output_throughput,
            "total_throughput": total_throughput,
            "output_throughput_per_gpu": _per_gpu(output_throughput, gpus),
            "total_throughput_per_gpu": _per_gpu(total_throughput, gpus),
            "goodput": goodput,
            "goodput_per_gpu": _per_gpu(goodput, gpus),
            "slo_attainment": good / sent if sent else None,
            "completed": len(ok),
            "failed": len(failed),
            "error_rate": len(failed) / sent if sent else None,
            "duration_s": duration,
        }
    )
    for key, value in metrics.items():
        if value is not None and not math.isfinite(value):
            metrics[key] = None

    errors: dict[str, int] = {}
    for r in failed:
        kind = r.error or "no_content"
        errors[kind] = errors.get(kind, 0) + 1

    return LoadPointResult(
        load_kind=load_kind,
        load_value=load_value,
        metrics=metrics,
        source="autotuner",
        notes=notes_out,
        errors=dict(sorted(errors.items())),
        extra={
            "sent": sent,
            "good": good,
            "total_input_tokens": in_tokens if input_known else None,
            "total_output_tokens": out_tokens,
        },
    )
