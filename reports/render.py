"""Pages from data: the Jinja2 environment and the view models the templates display.

Compute, then render: the analyses (:mod:`reports.recommend`, :mod:`reports.charts`, ...) decide
what is true; this module only arranges their answers for the three templates. Autoescaping is on
for every template, so a spec name or a log line is text wherever it lands in HTML. The one place
where data enters a ``<script>`` element — a chart's JSON — goes through :func:`script_json`,
which escapes ``<``, ``>`` and ``&`` as JSON unicode escapes: the browser's HTML parser then never
sees a ``</script>`` and ``JSON.parse`` restores the exact characters.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from reports import charts as charts_mod
from reports import compare, importance
from reports.charts import Chart
from reports.recommend import Recommendation, recommend
from reports.results import SpecResults, slug
from reports.values import (
    Objective,
    config_text,
    fmt,
    label,
    load_words,
    name,
    number,
    objectives_of,
    param_value,
    percent,
    slo_bounds,
    unit,
    value,
)
from specs.metrics import ALL_METRICS
from specs.records import ExperimentRecord, StatusRecord

TEMPLATES = files("site_templates")


def script_json(data: Any) -> Markup:
    """JSON that is safe inside ``<script type="application/json">`` (and decodes to ``data``)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
        auto_reload=False,
    )
    return env


def page_name(record_id: str) -> str:
    """File name of an experiment's page (ids are ``NNNN`` but are not trusted)."""
    return f"{slug(record_id)}.html"


def when(iso: str | None) -> str:
    """``2026-11-20T08:00:00+00:00`` -> ``2026-11-20 08:00 UTC``."""
    if not iso:
        return ""
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    zone = "UTC" if t.utcoffset() is not None and not t.utcoffset() else (t.strftime("%z") or "")
    return f"{t:%Y-%m-%d %H:%M} {zone}".strip()


# ------------------------------------------------------------------------------------ conditions


@dataclass(frozen=True)
class ConditionView:
    label: str
    css: str
    reason: str
    message: str


def condition(status: StatusRecord | None) -> ConditionView:
    """The one condition worth showing first: Stalled, else Degraded (a failure being retried),
    else Reconciling, else Ready."""
    if status is None:
        return ConditionView(
            "Unknown", "unknown", "", "No status.json yet: the first experiment may still be running."
        )
    for kind, css in (("Stalled", "bad"), ("Degraded", "warn"), ("Reconciling", "running"), ("Ready", "ok")):
        c = status.condition(kind)
        if c is not None and c.status == "True":
            retry = f" Next retry: {c.next_retry_time}." if c.next_retry_time else ""
            return ConditionView(kind, css, c.reason, c.message + retry)
    ready = status.condition("Ready")
    if ready is not None:
        return ConditionView(ready.reason or "Not ready", "warn", ready.reason, ready.message)
    return ConditionView("Unknown", "unknown", "", "")


def progress(spec: SpecResults) -> tuple[float, str]:
    done = sum(r.state in ("COMPLETE", "FAILED") for r in spec.current)
    target = spec.status.max_experiments if spec.status is not None and spec.status.max_experiments else None
    if target:
        return min(1.0, done / target), f"{done} / {target} experiments"
    return (1.0 if done else 0.0), f"{done} experiments"


# ------------------------------------------------------------------------------------ index


def index_row(spec: SpecResults) -> dict[str, Any]:
    """What the index shows about one spec: plain JSON, cached in the build manifest so that
    specs that did not change need not be read again to rebuild the index."""
    objectives = objectives_of(spec.status, spec.experiments)
    cond = condition(spec.status)
    fraction, text = progress(spec)
    rec = recommend(spec.current, objectives)
    first = objectives[0]
    best_value = value(rec.record, first.metric) if rec else None
    extra = ""
    if rec is not None and len(objectives) > 1:
        extra = ", ".join(fmt(o.metric, value(rec.record, o.metric)) for o in objectives[1:])
    engines = sorted({compare.engine_version(r) for r in spec.current}) or (
        [spec.status.engine] if spec.status and spec.status.engine else []
    )
    return {
        "name": spec.name,
        "slug": spec.slug,
        "title": spec.title or "",
        "condition": {"label": cond.label, "css": cond.css, "reason": cond.reason, "message": cond.message},
        "progress_fraction": round(fraction, 4),
        "progress_text": text,
        "best_text": fmt(first.metric, best_value) if best_value is not None else "–",
        "best_metric": name(first.metric),
        "best_sort": best_value if best_value is not None else "",
        "best_extra": extra,
        "best_config": config_text(rec.record.config) if rec else "",
        "engine": ", ".join(e for e in engines if e),
        "updated": when(spec.status.updated_at if spec.status else None),
        "updated_sort": (spec.status.updated_at or "") if spec.status else "",
        "experiments": len(spec.experiments),
        "reconciling": spec.reconciling,
    }


def index_context(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    totals = {
        "experiments": sum(r["experiments"] for r in rows),
        "ready": sum(r["condition"]["label"] == "Ready" for r in rows),
        "reconciling": sum(r["condition"]["label"] == "Reconciling" for r in rows),
        "stalled": sum(r["condition"]["label"] == "Stalled" for r in rows),
        "degraded": sum(r["condition"]["label"] == "Degraded" for r in rows),
    }
    return {"specs": [_Row(r) for r in rows], "totals": totals}


class _Row(dict[str, Any]):
    """A cached index row with attribute access for the template."""

    def __getattr__(self, key: str) -> Any:
        try:
            v = self[key]
        except KeyError:
            raise AttributeError(key) from None
        return _Row(v) if isinstance(v, dict) else v


# ------------------------------------------------------------------------------------ spec page


@dataclass
class Cell:
    text: str
    v: str | float | None = None
    href: str | None = None
    css: str = ""


@dataclass
class Column:
    label: str
    kind: str  # num | text
    title: str = ""


@dataclass
class TableView:
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)


#: summary metrics always shown in the experiment table (besides objectives and SLO metrics)
TABLE_METRICS = ("output_throughput", "ttft_p90_ms", "tpot_p90_ms", "goodput")


def experiment_table(
    spec: SpecResults, objectives: Sequence[Objective], top: ExperimentRecord | None
) -> TableView:
    records = spec.experiments
    params: list[str] = list(dict.fromkeys(k for r in records for k in r.config))
    metrics = list(
        dict.fromkeys(
            [o.metric for o in objectives] + [b.metric for b in slo_bounds(records)] + list(TABLE_METRICS)
        )
    )
    columns = [
        Column("Experiment", "text"),
        Column("Gen.", "text", "spec generation"),
        Column("State", "text"),
        Column("SLO", "text", "within every hard SLO at the summary load point"),
    ]
    columns += [Column(p, "num" if _numeric(records, p) else "text") for p in params]
    columns += [Column(label(m), "num") for m in metrics]
    columns += [
        Column("Load", "num", "summary load point"),
        Column("Time (s)", "num", "total experiment time"),
    ]
    table = TableView(columns)
    for r in records:
        state = r.state.lower()
        tags = [state]
        if r.state == "COMPLETE":
            tags.append("within-slo" if r.feasible else "breaks-slo")
        if r.baseline:
            tags.append("default")
        star = " ★" if top is not None and r.id == top.id else ""
        cells = [
            Cell(r.id + star + (" (default)" if r.baseline else ""), r.id, f"experiments/{page_name(r.id)}"),
            Cell(r.generation[:8], r.generation),
            Cell(state, state, css="bad" if r.state == "FAILED" else ""),
            Cell(
                "" if r.state != "COMPLETE" else "yes" if r.feasible else "no",
                css="" if r.feasible or r.state != "COMPLETE" else "bad",
            ),
        ]
        for p in params:
            v = r.config.get(p)
            shown = param_value(v) if p in r.config else ("default" if r.baseline else "")
            sort = v if isinstance(v, int | float) and not isinstance(v, bool) else shown
            cells.append(Cell(shown, sort))
        for m in metrics:
            x = value(r, m)
            cells.append(Cell(number(x), x if x is not None else ""))
        point = _summary_point(r)
        cells.append(Cell(number(point.load_value) if point else "", point.load_value if point else ""))
        total = r.timings.get("total_s")
        cells.append(Cell(number(total) if total is not None else "", total if total is not None else ""))
        table.rows.append({"state": " ".join(tags), "generation": r.generation, "cells": cells})
    return table


def _numeric(records: Sequence[ExperimentRecord], param: str) -> bool:
    vals = [r.config[param] for r in records if param in r.config]
    return bool(vals) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)


def _summary_point(r: ExperimentRecord) -> Any:
    i = r.summary_index
    return r.load_points[i] if i is not None and 0 <= i < len(r.load_points) else None


def _load_words(r: ExperimentRecord) -> str:
    point = _summary_point(r)
    return "" if point is None else load_words(point.load_kind, point.load_value)


def recommendation_view(spec: SpecResults, rec: Recommendation) -> dict[str, Any]:
    r = rec.record
    gains = []
    for g in rec.gains:
        change, css = "", "neutral"
        if g.gain is not None:
            change = f"{percent(g.gain, signed=True)} vs default ({fmt(g.objective.metric, g.baseline)})"
            css = "good" if g.gain > 0 else "poor" if g.gain < 0 else "neutral"
            if g.gain < 0 and rec.baseline_breaks_slo:
                change += ", which breaks an SLO"
                css = "neutral"
        gains.append(
            {
                "label": label(g.objective.metric),
                "value": fmt(g.objective.metric, g.best),
                "change": change,
                "css": css,
            }
        )
    margins = [
        {
            "label": name(m.metric),
            "value": fmt(m.metric, m.value),
            "bound": fmt(m.metric, m.bound),
            "margin": (f"{percent(m.margin)} headroom" if m.ok else f"{percent(-(m.margin or 0))} over")
            if m.margin is not None
            else "not measured",
            "css": "good" if m.ok else "poor",
            "hard": m.hard,
        }
        for m in rec.margins
    ]
    commands, note = _commands(spec, r)
    alternatives = [
        {
            "id": p.id,
            "page": page_name(p.id),
            "config": config_text(p.config),
            "metrics": ", ".join(fmt(o.metric, value(p, o.metric)) for o in rec.objectives),
        }
        for p in rec.pareto
        if p.id != r.id
    ]
    return {
        "id": r.id,
        "page": page_name(r.id),
        "config": config_text(r.config),
        "load": _load_words(r),
        "gains": gains,
        "margins": margins,
        "baseline_note": rec.baseline_note,
        "headline": rec.headline,
        "commands": commands,
        "commands_note": note,
        "alternatives": alternatives,
    }


def _commands(spec: SpecResults, r: ExperimentRecord) -> tuple[list[dict[str, str]], str | None]:
    """The deployable artifacts from ``best/`` when they are of this record; else the record's
    own command line (``best/`` is written by the study and may lag behind or be absent)."""
    best = spec.best_files
    of_this = False
    if "engine-args.json" in best:
        try:
            of_this = str(json.loads(best["engine-args.json"]).get("experiment")) == r.id
        except (ValueError, AttributeError):
            of_this = False
    out = []
    if of_this:
        for key, title in (
            ("command.sh", "Command line"),
            ("docker-run.sh", "docker run"),
            ("deployment.yaml", "Kubernetes"),
        ):
            if key in best:
                out.append({"label": f"{title} (best/{key})", "text": best[key].rstrip("\n")})
        if out:
            return out, None
    if r.command:
        out.append({"label": "Command line (as measured)", "text": shlex.join(r.command)})
    note = "best/ does not hold this configuration yet; the command above is the one the experiment ran."
    return out, note if r.command else "The command line of this experiment was not recorded."


def spec_context(spec: SpecResults) -> dict[str, Any]:
    """Everything the spec page shows. Expensive parts (importance) run only here."""
    current = spec.current
    objectives = objectives_of(spec.status, spec.experiments)
    first = objectives[0]
    bounds = slo_bounds(current or spec.experiments)
    rec = recommend(current, objectives)
    top = rec.record if rec else None
    cs: list[Chart | None] = [
        charts_mod.tradeoff(
            "tradeoff",
            "Trade-off and Pareto front",
            current,
            charts_mod.tradeoff_objectives(objectives, bounds),
            top,
        ),
        charts_mod.efficiency(current, charts_mod.tradeoff_objectives(objectives, bounds), top),
        charts_mod.slo_and_goodput(current, first, top),
        charts_mod.throughput_latency(current, first, bounds, top),
        charts_mod.optimization_history(spec.experiments, first),
    ]
    notes: list[str] = []
    imp = importance.importance(current, first)
    completed = sum(r.state == "COMPLETE" and not r.baseline for r in current)
    if imp is None:
        if current:
            notes.append(charts_mod.importance_missing(completed, importance.MIN_TRIALS))
    else:
        cs.append(charts_mod.importance(imp, first, completed, importance.MIN_TRIALS))
    cs += [charts_mod.slices(current, first), charts_mod.parallel_coordinates(current, first)]
    gens = compare.by_generation(spec.experiments, first)
    gen_labels = {g.key: f"{g.key[:8]}{' (current)' if g.key == spec.generation else ''}" for g in gens}
    cs.append(
        charts_mod.comparison(
            "generations", "Generations of this spec", gens, first, "Generation", gen_labels
        )
    )
    cs.append(
        charts_mod.comparison(
            "engines",
            "Engine versions",
            compare.by_engine_version(spec.experiments, first),
            first,
            "Engine version",
        )
    )
    charts = [c for c in cs if c is not None]
    for c in charts:
        c.json = script_json(c.figure)
    cond = condition(spec.status)
    fraction, text = progress(spec)
    failures = [
        {
            "id": r.id,
            "page": page_name(r.id),
            "kind": r.failure.kind if r.failure else r.state.lower(),
            "reason": r.failure.reason if r.failure else "",
            "config": config_text(r.config),
        }
        for r in reversed(spec.experiments)
        if r.state == "FAILED"
    ]
    problems = [
        {
            "where": p.get("file", "")
            + (f":{p['line']}" if p.get("line") else "")
            + (f" {p['path']}" if p.get("path") else ""),
            "message": str(p.get("message", "")),
        }
        for p in (spec.status.problems if spec.status else [])
    ]
    problems += [{"where": path, "message": reason} for path, reason in spec.unreadable]
    generations = [
        {"id": g.key, "label": gen_labels[g.key], "current": g.key == spec.generation} for g in gens
    ]
    no_rec = (
        "No experiment has finished yet."
        if not current
        else "No experiment of the current generation met every hard SLO yet: "
        "see the failures and the SLO charts below."
    )
    return {
        "spec": {
            "name": spec.name,
            "title": spec.title,
            "condition": cond,
            "progress_text": text,
            "progress_fraction": fraction,
            "generation_short": (spec.generation or "–")[:8],
            "updated": when(spec.status.updated_at if spec.status else None),
            "revision": (spec.status.last_applied_revision or "")[:12] if spec.status else "",
        },
        "rec": recommendation_view(spec, rec) if rec else None,
        "no_rec_reason": no_rec,
        "charts": charts,
        "chart_notes": notes,
        "table": experiment_table(spec, objectives, top),
        "generations": generations if len(generations) > 1 else [],
        "failures": failures,
        "problems": problems,
    }


# ------------------------------------------------------------------------------------ experiment page


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
        "summary_load": _load_words(r),
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
