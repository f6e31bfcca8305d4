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

**Engine time.** ``time_scale`` is how many seconds of the engine's own clock pass per
wall-clock second: 1 for a real engine, ``--time-scale`` for the sim engine, which runs that
much faster than the hardware it models. Every time-based number and every verdict is computed
here, once, in the engine's time: per-request latencies are scaled *before* they are compared
with SLO bounds (goodput, attainment, and through the metrics the capacity verdicts and the
study's SLO checks), durations grow and rates shrink by the scale. Rescaling finished metrics
afterwards is wrong: a request with a simulated TTFT of 1500 ms is 75 ms of wall time at scale
20, and would pass a 1000 ms bound. When the scale is not 1 the wall-clock numbers are kept
beside the metrics (``LoadPointRecord.wall_metrics``) for whoever wants to see what the client saw.
``schedule_delay_*_ms`` (open loop: how late each request was sent against its scheduled time)
describe the client, not the engine, and stay in wall-clock milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Literal

from backends.loadgen.records import RequestRecord
from backends.loadgen.stats import summarize
from specs.metrics import LATENCY_BASES, PER_REQUEST_BASE
from specs.model import SloBound
from specs.records import LoadPointRecord


def request_latencies(rec: RequestRecord, time_scale: float = 1.0) -> dict[str, float | None]:
    """Per-request values in seconds of engine time (see the module docstring), keyed by latency
    base (``ttft``, ``tpot``, ``itl``, ``e2e``); for ``itl`` the request's largest gap. These are
    what goodput compares with SLO bounds."""
    first = rec.first_token_time
    if not rec.ok or first is None or rec.end_time is None:
        return dict.fromkeys(LATENCY_BASES)
    ttft = (first - rec.send_time) * time_scale
    e2e = (rec.end_time - rec.send_time) * time_scale
    out = rec.output_tokens
    tpot = (e2e - ttft) / (out - 1) if out > 1 else None
    times = rec.chunk_times
    itl_max = max(b - a for a, b in pairwise(times)) * time_scale if len(times) > 1 else None
    return {"ttft": ttft, "tpot": tpot, "itl": itl_max, "e2e": e2e}


def _slo_base(metric: str) -> str | None:
    """``ttft_p90_ms`` -> ``ttft``; None for SLOs that are not per-request (``error_rate``)."""
    base = metric.split("_", 1)[0]
    return base if base in PER_REQUEST_BASE and metric.endswith("_ms") else None


def is_good(rec: RequestRecord, slo: Mapping[str, SloBound], time_scale: float = 1.0) -> bool:
    """Did this request succeed and meet every per-request SLO, in engine time? (see the module
    docstring)"""
    if not rec.ok or rec.first_token_time is None:
        return False
    values = request_latencies(rec, time_scale)
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
    time_scale: float = 1.0,
) -> LoadPointRecord:
    """Compute every metric of section 5 from the measured (non-warm-up) requests of one level,
    in engine time (``time_scale`` engine seconds per wall second; ``load_value`` is already in
    engine time)."""
    if not time_scale > 0 or not math.isfinite(time_scale):
        raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
    recs = list(records)
    result = _aggregate(recs, load_kind, load_value, gpus, dict(slo or {}), notes, time_scale)
    if time_scale != 1.0:
        wall = _aggregate(recs, load_kind, load_value * time_scale, gpus, {}, (), 1.0)
        result.wall_metrics = {
            k: v for k, v in wall.metrics.items() if k not in ("goodput", "goodput_per_gpu", "slo_attainment")
        }
        result.measured["time_scale"] = time_scale
        result.notes.append(
            f"the engine runs {time_scale:g}x faster than real time: times, rates and SLO verdicts are in "
            "the engine's time; the wall-clock numbers are kept in wall_metrics"
        )
    return result


def _aggregate(
    recs: list[RequestRecord],
    load_kind: Literal["concurrency", "request_rate"],
    load_value: float,
    gpus: int,
    slo: dict[str, SloBound],
    notes: Sequence[str],
    time_scale: float,
) -> LoadPointRecord:
    # a "success" without a single content chunk has no TTFT: it counts as failed (no_content)
    ok = [r for r in recs if r.ok and r.first_token_time is not None]
    failed = [r for r in recs if not (r.ok and r.first_token_time is not None)]
    notes_out = list(notes)

    ttft: list[float] = []
    e2e: list[float] = []
    tpot: list[float] = []
    itl: list[float] = []
    for r in ok:
        values = request_latencies(r, time_scale)
        ttft.append(values["ttft"] or 0.0)
        e2e.append(values["e2e"] or 0.0)
        if values["tpot"] is not None:
            tpot.append(values["tpot"])
        times = r.chunk_times
        itl.extend((b - a) * time_scale for a, b in pairwise(times))

    sends = [r.send_time for r in recs]
    ends = [r.end_time for r in recs if r.end_time is not None]
    duration = (max(ends) - min(sends)) * time_scale if sends and ends else None
    if duration is not None and duration <= 0:
        duration = None
    # the client's lateness against the open-loop schedule: wall time, whatever the engine's clock
    delays = [r.send_time - r.scheduled_time for r in recs if r.scheduled_time is not None]

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

    good = sum(1 for r in ok if is_good(r, slo, time_scale))
    sent = len(ok) + len(failed)

    metrics: dict[str, float | None] = {}
    metrics.update(summarize(ttft, "ttft"))
    metrics.update(summarize(tpot, "tpot"))
    metrics.update(summarize(itl, "itl"))
    metrics.update(summarize(e2e, "e2e"))
    # None at closed-loop levels: there is no schedule to be late against
    metrics.update(summarize([max(0.0, d) for d in delays], "schedule_delay"))
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

    return LoadPointRecord(
        load_kind=load_kind,
        load_value=load_value,
        metrics=metrics,
        source="autotuner",
        notes=notes_out,
        errors=dict(sorted(errors.items())),
        measured=_cache_facts(ok),
        extra={
            "sent": sent,
            "good": good,
            "total_input_tokens": in_tokens if input_known else None,
            "total_output_tokens": out_tokens,
        },
    )


def _cache_facts(ok: Sequence[RequestRecord]) -> dict[str, int]:
    """Prefix-cache hits the server reported (``usage.prompt_tokens_details.cached_tokens``):
    the most any measured request got and the total, so a cache primed by warm-up or an earlier
    level shows."""
    cached = [r.usage_cached_tokens for r in ok if r.usage_cached_tokens is not None]
    if not cached:
        return {}
    return {"cached_prompt_tokens": sum(cached), "max_cached_prompt_tokens": max(cached)}
