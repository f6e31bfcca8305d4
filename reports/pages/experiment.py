"""An experiment page's view model: its load points against the SLO bounds, the command line,
timings, failure and log tail."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from reports import charts as charts_mod
from reports.render import (
    script_json,
    summary_load_words,
    when,
)
from reports.values import (
    fmt,
    label,
    name,
    number,
    param_value,
    percent,
    slo_bounds,
    unit,
)
from specs.metrics import ALL_METRICS
from specs.records import ExperimentRecord


def experiment_context(r: ExperimentRecord) -> dict[str, Any]:
    bounds = slo_bounds([r])
    chart = charts_mod.experiment_loads(r, bounds)
    if chart is not None:
        chart.json = script_json(chart.figure)
    points = sorted(r.load_points, key=lambda p: p.load_value)
    loads = [
        (
            f"{number(p.load_value)} req/s"
            if p.load_kind == "request_rate"
            else f"concurrency {number(p.load_value)}"
        )
        + (
            " ◆"
            if r.summary_index is not None
            and 0 <= r.summary_index < len(r.load_points)
            and r.load_points[r.summary_index] is p
            else ""
        )
        for p in points
    ]
    bound_of = {b.metric: b.max for b in bounds}
    notes = (
        ["◆ marks the summary load point: the highest throughput within every hard SLO."] if points else []
    )
    notes += [f"{load}: {n}" for load, p in zip(loads, points, strict=True) for n in p.notes]
    notes += [
        f"{load}: errors {', '.join(f'{k}×{v}' for k, v in p.errors.items())}"
        for load, p in zip(loads, points, strict=True)
        if p.errors
    ]
    objectives = [
        {
            "label": label(o.metric),
            "raw": fmt(o.metric, o.raw),
            "note": ""
            if o.value is None or o.raw is None or abs(o.value - o.raw) < 1e-9 * max(1.0, abs(o.raw))
            else f"scored {number(o.value)} after the soft-SLO penalty",
        }
        for o in r.objectives
    ]
    slo = [
        {
            "label": name(str(v.get("metric"))),
            "value": fmt(str(v.get("metric")), _f(v.get("value"))),
            "bound": fmt(str(v.get("metric")), _f(v.get("max"))),
            "hard": bool(v.get("hard", True)),
            "margin": _margin_text(v),
            "css": "good" if v.get("ok") else "poor",
        }
        for v in r.slo
    ]
    env = [
        ("Engine", " ".join(str(x) for x in (r.engine.get("name"), r.engine.get("version")) if x) or "–"),
        ("Image", str(r.engine.get("image") or "–")),
        ("Model", str(r.model.get("id") or "–")),
        ("Backend", str(r.backend.get("kind") or "–")),
        ("GPUs", f"{r.gpu.count} × {r.gpu.model}" if r.gpu.model else str(r.gpu.count)),
        ("GPU driver", r.gpu.driver or "–"),
        ("Dataset fingerprint", str(r.workload.get("fingerprint") or "–")),
        ("Started", when(r.started_at) or "–"),
        ("Tool version", r.tool_version),
    ]
    failure = None
    if r.failure is not None:
        failure = {
            "kind": r.failure.kind,
            "reason": r.failure.reason,
            "log_tail": r.failure.log_tail,
            "exit_code": r.failure.exit_code,
        }
    exp = {
        "id": r.id,
        "state": r.state.lower(),
        "state_css": {"COMPLETE": "ok", "FAILED": "bad"}.get(r.state, "warn"),
        "feasible": r.feasible if r.state == "COMPLETE" else None,
        "baseline": r.baseline,
        "simulated": r.simulated,
        "reused_from": r.reused_from,
        "generation": r.generation,
        "trial": r.trial,
        "finished": when(r.finished_at),
        "config": [(k, param_value(v)) for k, v in r.config.items()],
        "flags": [(k, param_value(v)) for k, v in r.engine_flags.items()]
        if r.engine_flags != r.config
        else [],
        "objectives": objectives,
        "slo": slo,
        "summary_load": summary_load_words(r),
        "points": loads,
        "points_table": _points_table(points, loads, bound_of),
        "point_notes": notes,
        "command": shlex.join(r.command) if r.command else "",
        "timings": [(k, f"{number(v)} s" if k.endswith("_s") else number(v)) for k, v in r.timings.items()],
        "environment": env,
        "failure": failure,
    }
    return {"exp": exp, "chart": chart}


def _points_table(points: Sequence[Any], loads: Sequence[str], bounds: dict[str, float]) -> dict[str, Any]:
    """The load-point table as data (metrics down, load levels across) for the template's
    ``points_table`` macro; cells are numbers this function formatted itself."""
    present: set[str] = set()
    for p in points:
        present.update(k for k, v in p.metrics.items() if v is not None)
    names = [m for m in ALL_METRICS if m in present] + sorted(present - _KNOWN)
    rows = []
    for m in names:
        title, scale, suffix = _row_format(m)
        bound = bounds.get(m)
        cells = []
        for p in points:
            v = p.metrics.get(m)
            text = "–" if v is None else number(v * scale) + suffix
            spread = getattr(p, "spread", {}).get(m)
            span = None
            if spread and v is not None and spread["min"] != spread["max"]:
                # repeats: the cell is their median, with the range beside it
                span = (number(spread["min"] * scale), number(spread["max"] * scale))
            cells.append((text, bound is not None and (v is None or v > bound), span))
        rows.append({"title": title, "bound": None if bound is None else fmt(m, bound), "cells": cells})
    return {"loads": list(loads), "rows": rows}


@lru_cache(maxsize=512)
def _row_format(metric: str) -> tuple[str, float, str]:
    """(row title, scale, unit suffix) of a metric's row."""
    if metric not in _KNOWN:
        return metric, 1.0, ""
    u = unit(metric)
    if u == "%":
        return label(metric), 100.0, " %"
    return label(metric), 1.0, f" {u}" if u else ""


_KNOWN = frozenset(ALL_METRICS)


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _margin_text(v: dict[str, Any]) -> str:
    margin = _f(v.get("margin"))
    if margin is None:
        return "not measured"
    return f"{percent(margin)} headroom" if margin >= 0 else f"{percent(-margin)} over"
