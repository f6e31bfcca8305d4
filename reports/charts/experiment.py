"""The experiment page's chart: its metrics at every load level against the SLO bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reports import curves as curves_mod
from reports.charts._base import INFEASIBLE, PALETTE, RECOMMENDED, Chart, Table, axis, layout
from reports.charts.loads import load_label
from reports.values import (
    Bound,
    fmt,
    label,
    load_words,
    number,
)
from specs.records import ExperimentRecord


def experiment_loads(r: ExperimentRecord, bounds: Sequence[Bound]) -> Chart | None:
    """One experiment: throughput and latency at every load point, with the SLO bounds."""
    latency_metrics = [b.metric for b in bounds if b.metric.endswith("_ms")] or ["ttft_p90_ms"]
    cv = curves_mod.curve(r, ["output_throughput", *latency_metrics])
    if not cv.loads:
        return None
    traces: list[dict[str, Any]] = [
        {
            "type": "bar",
            "name": label("output_throughput"),
            "x": cv.loads,
            "y": cv.series["output_throughput"],
            "marker": {"color": ["#9ecae1" if ok else INFEASIBLE for ok in cv.feasible]},
            "yaxis": "y",
            "hovertemplate": "%{x}: %{y:,.4~g} tok/s<extra></extra>",
        }
    ]
    for i, m in enumerate(latency_metrics):
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": label(m),
                "x": cv.loads,
                "y": cv.series[m],
                "yaxis": "y2",
                "line": {"color": PALETTE[(i + 2) % len(PALETTE)], "width": 2},
                "hovertemplate": "%{x}: %{y:,.4~g} ms<extra></extra>",
            }
        )
    lay = layout(
        xaxis=axis(load_label([cv]), type="category"),
        yaxis=axis(label("output_throughput")),
        yaxis2=axis(
            "Latency (ms)", overlaying="y", side="right", gridcolor="rgba(0,0,0,0)", rangemode="tozero"
        ),
        height=340,
        margin={"l": 64, "r": 64, "t": 16, "b": 56},
    )
    lay["shapes"] = [
        {
            "type": "line",
            "xref": "paper",
            "yref": "y2",
            "x0": 0,
            "x1": 1,
            "y0": b.max,
            "y1": b.max,
            "line": {"color": RECOMMENDED, "dash": "dash", "width": 1},
        }
        for b in bounds
        if b.metric in latency_metrics
    ]
    best_load = curves_mod.max_compliant_load(cv)
    if best_load is not None:
        i = cv.loads.index(best_load)
        caption = (
            f"The highest load within every hard SLO is {load_words(cv.load_kind, best_load)}, with "
            f"{fmt('output_throughput', cv.series['output_throughput'][i])}."
        )
        broken = [
            (load, ok) for load, ok in zip(cv.loads, cv.feasible, strict=True) if not ok and load > best_load
        ]
        if broken:
            caption += f" From {load_words(cv.load_kind, broken[0][0])} on, a hard SLO breaks."
    else:
        caption = "No load level met every hard SLO."
    rows = [
        [
            load_words(cv.load_kind, load),
            *[number(cv.series[m][i]) for m in ["output_throughput", *latency_metrics]],
            "yes" if cv.feasible[i] else "no",
        ]
        for i, load in enumerate(cv.loads)
    ]
    table = Table(
        ["Load", label("output_throughput"), *[label(m) for m in latency_metrics], "Within hard SLOs"], rows
    )
    return Chart("loads", "Throughput and latency by load", caption, {"data": traces, "layout": lay}, table)
