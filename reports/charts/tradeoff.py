"""Trade-off charts: objective against objective (Pareto front) and efficiency per GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reports.charts._base import (
    BASELINE,
    FEASIBLE,
    FRONT,
    INFEASIBLE,
    RECOMMENDED,
    Chart,
    Table,
    axis,
    hover,
    layout,
    marker_for,
    rid,
    text,
)
from reports.pareto import front as pareto_front_of
from reports.pareto import gpu_counts_vary, per_gpu
from reports.values import (
    Bound,
    Objective,
    config_text,
    fmt,
    label,
    name,
    number,
)
from specs.records import ExperimentRecord


def tradeoff(
    chart_id: str,
    title: str,
    records: Sequence[ExperimentRecord],
    objectives: Sequence[Objective],
    top: ExperimentRecord | None,
) -> Chart | None:
    """Scatter of the first two objectives (the third as color) with the Pareto front drawn."""
    f = pareto_front_of(records, objectives)
    if len(f.points) < 1:
        return None
    a, b = f.objectives[0], f.objectives[1]
    c = f.objectives[2] if len(f.objectives) > 2 else None
    traces: list[dict[str, Any]] = []
    groups: dict[str, list[Any]] = {"breaks an SLO": [], "within SLO": [], "default": [], "recommended": []}
    for p in f.points:
        groups[marker_for(p.record, top)].append(p)
    styles = {
        "breaks an SLO": {"color": INFEASIBLE, "symbol": "x", "size": 8},
        "within SLO": {"color": FEASIBLE, "symbol": "circle", "size": 8},
        "default": {"color": BASELINE, "symbol": "diamond", "size": 12},
        "recommended": {"color": RECOMMENDED, "symbol": "star", "size": 16},
    }
    for key, pts in groups.items():
        if not pts:
            continue
        marker: dict[str, Any] = dict(styles[key])
        if c is not None and key == "within SLO":
            marker |= {
                "color": [p.values[2] for p in pts],
                "colorscale": "Viridis",
                "reversescale": c.direction == "minimize",
                "showscale": True,
                "colorbar": {"title": {"text": text(name(c.metric))}, "thickness": 12},
            }
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": key if key != "default" else "engine default",
                "x": [p.values[0] for p in pts],
                "y": [p.values[1] for p in pts],
                "text": [hover(p.record) for p in pts],
                "hovertemplate": "%{text}<br>%{x:,.4~g} · %{y:,.4~g}<extra></extra>",
                "marker": marker,
            }
        )
    members = sorted(f.front, key=lambda p: p.values[0])
    if len(members) > 1:
        traces.insert(
            0,
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Pareto front",
                "x": [p.values[0] for p in members],
                "y": [p.values[1] for p in members],
                "line": {
                    "color": FRONT,
                    "width": 2,
                    "dash": "dot",
                    "shape": "hv" if a.direction != b.direction else "linear",
                },
                "hoverinfo": "skip",
            },
        )
    figure = {
        "data": traces,
        "layout": layout(xaxis=axis(_with_dir(a)), yaxis=axis(_with_dir(b))),
    }
    n = len(f.points)
    k = len(f.front)
    caption = (
        f"{k} of {n} measured configurations are Pareto-optimal for {name(a.metric)} against {name(b.metric)}"
    )
    if c is not None:
        caption += f" and {name(c.metric)} (color)"
    caption += "."
    if top is not None and (tp := next((p for p in f.points if p.record.id == top.id), None)) is not None:
        caption += (
            f" The recommendation, {rid(top)} ({config_text(top.config)}), reaches "
            f"{fmt(a.metric, tp.values[0])}"
            f" at {fmt(b.metric, tp.values[1])}."
        )
        extreme = min(
            f.front, key=lambda p: p.values[1] if b.direction == "minimize" else -p.values[1], default=None
        )
        if extreme is not None and extreme.record.id != top.id:
            caption += (
                f" For the best {name(b.metric)}, {rid(extreme.record)} reaches "
                f"{fmt(b.metric, extreme.values[1])}"
                f" at {fmt(a.metric, extreme.values[0])}."
            )
    elif not f.front:
        caption += " None of them met every hard SLO, so there is no front."
    headers = ["Experiment", "Configuration", label(a.metric), label(b.metric)]
    if c is not None:
        headers.append(label(c.metric))
    headers += ["Pareto-optimal", "Within SLO"]
    rows = []
    for p in sorted(f.points, key=lambda p: p.record.id):
        row = [rid(p.record), config_text(p.record.config), *[number(v) for v in p.values]]
        rows.append([*row, "yes" if p.on_front else "", "yes" if p.feasible else "no"])
    return Chart(chart_id, title, caption, figure, Table(headers, rows))


def _with_dir(o: Objective) -> str:
    arrow = "higher is better" if o.direction == "maximize" else "lower is better"
    return f"{label(o.metric)}, {arrow}"


def tradeoff_objectives(objectives: Sequence[Objective], bounds: Sequence[Bound]) -> list[Objective]:
    """The spec's objectives when there are several; otherwise the one objective against the first
    latency SLO (the trade-off a single-objective study is implicitly making)."""
    if len(objectives) > 1:
        return list(objectives[:3])
    latency = next((b.metric for b in bounds if b.metric.endswith("_ms")), "ttft_p90_ms")
    if latency == objectives[0].metric:
        latency = "e2e_p90_ms"
    return [objectives[0], Objective(latency, "minimize")]


def efficiency(
    records: Sequence[ExperimentRecord], objectives: Sequence[Objective], top: ExperimentRecord | None
) -> Chart | None:
    """The trade-off per GPU, when experiments used different GPU counts and the objective is not
    already per GPU (two GPUs doubling throughput is not an efficiency gain)."""
    first = objectives[0]
    if not gpu_counts_vary(records) or per_gpu(first.metric) == first.metric:
        return None
    objs = [Objective(per_gpu(first.metric), first.direction), *objectives[1:]]
    chart = tradeoff("efficiency", "Per-GPU efficiency", records, objs, top)
    if chart is not None:
        chart.notes.append(
            "Experiments used different numbers of GPUs; this chart divides by each one's GPU count."
        )
    return chart
