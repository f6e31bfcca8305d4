"""How the report reads one number from a record, names it, and writes it for people.

Every analysis goes through :func:`value`, so that "throughput per GPU" means the same thing on
every chart: the stored ``*_per_gpu`` metric when the measurement has it, else the metric divided
by the record's GPU count (records imported from other tools may lack the per-GPU names).

The SLO bounds are read back from the verdicts stored in the records rather than from the spec:
the report is built from ``results/`` alone, and a record's verdicts say which bound it was
judged against even after the spec changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from specs.metrics import NATURAL_DIRECTION
from specs.records import ExperimentRecord, StatusRecord

Direction = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Direction

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.direction == "maximize" else a < b

    def gain(self, new: float, old: float) -> float | None:
        """Relative improvement of ``new`` over ``old``, positive when ``new`` is better."""
        if old == 0:
            return None
        change = (new - old) / abs(old)
        return change if self.direction == "maximize" else -change


@dataclass(frozen=True)
class Bound:
    """One SLO as the records were judged against it."""

    metric: str
    max: float
    hard: bool
    weight: float


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def metric_of(metrics: dict[str, float | None], metric: str, gpus: int) -> float | None:
    v = _num(metrics.get(metric))
    if v is None and metric.endswith("_per_gpu") and gpus > 0:
        base = _num(metrics.get(metric.removesuffix("_per_gpu")))
        v = None if base is None else base / gpus
    return v


def value(record: ExperimentRecord, metric: str) -> float | None:
    """``metric`` at the record's summary load point (derived per GPU when needed)."""
    return metric_of(record.summary, metric, record.gpu.count)


def objectives_of(status: StatusRecord | None, records: Sequence[ExperimentRecord]) -> list[Objective]:
    """The spec's objectives: from the status, else from the newest scored record."""
    out: list[Objective] = []
    if status is not None:
        for o in status.objectives:
            metric = o.get("metric")
            if isinstance(metric, str):
                direction = o.get("direction") or NATURAL_DIRECTION.get(metric, "maximize")
                out.append(Objective(metric, "minimize" if direction == "minimize" else "maximize"))
    if not out:
        for r in reversed(records):
            if r.objectives:
                out = [Objective(o.metric, o.direction) for o in r.objectives]
                break
    return out or [Objective("output_throughput_per_gpu", "maximize")]


def slo_bounds(records: Sequence[ExperimentRecord]) -> list[Bound]:
    """The SLOs of the newest record that was judged against any."""
    for r in reversed(records):
        verdicts = r.slo or next((p.slo for p in r.load_points if p.slo), [])
        bounds = []
        for v in verdicts:
            bound = _num(v.get("max"))
            if isinstance(v.get("metric"), str) and bound is not None and bound > 0:
                bounds.append(
                    Bound(v["metric"], bound, bool(v.get("hard", True)), _num(v.get("weight")) or 1.0)
                )
        if bounds:
            return bounds
    return []


# ------------------------------------------------------------------------------------- words

_BASES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E latency"}
_NAMES = {
    "request_throughput": ("Request throughput", "req/s"),
    "output_throughput": ("Output throughput", "tok/s"),
    "total_throughput": ("Total throughput", "tok/s"),
    "output_throughput_per_gpu": ("Output throughput per GPU", "tok/s"),
    "total_throughput_per_gpu": ("Total throughput per GPU", "tok/s"),
    "goodput": ("Goodput", "req/s"),
    "goodput_per_gpu": ("Goodput per GPU", "req/s"),
    "slo_attainment": ("SLO attainment", "%"),
    "error_rate": ("Error rate", "%"),
    "completed": ("Completed requests", ""),
    "failed": ("Failed requests", ""),
    "duration_s": ("Duration", "s"),
}


def name(metric: str) -> str:
    """``ttft_p90_ms`` -> ``TTFT p90``; unknown names are returned as they are."""
    if metric in _NAMES:
        return _NAMES[metric][0]
    parts = metric.split("_")
    if len(parts) == 3 and parts[0] in _BASES and parts[2] == "ms":
        return f"{_BASES[parts[0]]} {parts[1]}"
    return metric


def unit(metric: str) -> str:
    if metric in _NAMES:
        return _NAMES[metric][1]
    return "ms" if metric.endswith("_ms") else ""


def label(metric: str) -> str:
    """Axis label: name and unit."""
    u = unit(metric)
    return f"{name(metric)} ({u})" if u else name(metric)


def number(v: float | None, digits: int = 3) -> str:
    """A number with at least ``digits`` significant figures (all of its integer part) and
    thousands separators; '–' for none. Called a hundred times per page: cheap tests first."""
    if v is None:
        return "–"
    a = abs(v)
    if 10 ** (digits - 1) <= a < 1e15:
        return f"{v:,.0f}"
    if a != a or a == math.inf:
        return "–"
    if a >= 1e15:
        return f"{v:.{digits}g}"
    if float(v).is_integer():
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:,.{digits - len(str(int(a)))}f}"
    return f"{v:.{digits}g}" if a < 1e-3 else f"{v:.{digits - 1 - math.floor(math.log10(a))}f}"


def fmt(metric: str, v: float | None) -> str:
    """A metric's value with its unit, e.g. ``412 ms``, ``4,590 tok/s``, ``97.5 %``."""
    if v is None:
        return "–"
    u = unit(metric)
    if u == "%":
        return f"{number(v * 100)} %"
    return f"{number(v)} {u}".rstrip()


def percent(fraction: float | None, *, signed: bool = False) -> str:
    if fraction is None or not math.isfinite(fraction):
        return "–"
    text = f"{fraction * 100:+.0f} %" if signed else f"{fraction * 100:.0f} %"
    return text.replace("-", "−")


def param_value(v: Any) -> str:
    """A configuration value as the user wrote it in YAML (``true``, not ``True``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if v != 0 else "0"
    return str(v)


def config_text(config: dict[str, Any], *, empty: str = "engine defaults") -> str:
    """``max-num-seqs=128, quant.kvcache_dtype=fp8_e5m2``."""
    if not config:
        return empty
    return ", ".join(f"{k}={param_value(v)}" for k, v in config.items())


def load_words(kind: str, v: float | None) -> str:
    """A load level in words: ``concurrency 8`` or ``2.5 req/s``."""
    if v is None:
        return "no load level"
    return f"{number(v)} req/s" if kind == "request_rate" else f"concurrency {number(v)}"
