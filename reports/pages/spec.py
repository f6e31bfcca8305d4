"""A spec page's view model: the recommendation with its gains and commands, the charts, and
the sortable experiment table."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reports import charts as charts_mod
from reports import compare, importance
from reports.charts import Chart
from reports.recommend import Recommendation, recommend
from reports.render import (
    condition,
    page_name,
    progress,
    script_json,
    summary_load_words,
    summary_point,
    when,
)
from reports.results import SpecResults
from reports.values import (
    Objective,
    config_text,
    fmt,
    label,
    name,
    number,
    objectives_of,
    param_value,
    percent,
    slo_bounds,
    value,
)
from specs.records import ExperimentRecord


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
        point = summary_point(r)
        cells.append(Cell(number(point.load_value) if point else "", point.load_value if point else ""))
        total = r.timings.get("total_s")
        cells.append(Cell(number(total) if total is not None else "", total if total is not None else ""))
        table.rows.append({"state": " ".join(tags), "generation": r.generation, "cells": cells})
    return table


def _numeric(records: Sequence[ExperimentRecord], param: str) -> bool:
    vals = [r.config[param] for r in records if param in r.config]
    return bool(vals) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)


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
        "load": summary_load_words(r),
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
