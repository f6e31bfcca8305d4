"""Load curves: SLO attainment and goodput against load, throughput against latency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reports import curves as curves_mod
from reports.charts._base import (
    BASELINE,
    PALETTE,
    RECOMMENDED,
    Chart,
    Table,
    axis,
    hover,
    layout,
    rid,
    short,
    text,
)
from reports.values import (
    Bound,
    Objective,
    fmt,
    label,
    load_words,
    name,
    number,
    percent,
)
from specs.records import ExperimentRecord


def _curve_traces(
    cs: Sequence[curves_mod.Curve],
    x_of: str | None,
    y: str,
    top: ExperimentRecord | None,
    axes: tuple[str, str] = ("x", "y"),
    legend: bool = True,
) -> list[dict[str, Any]]:
    traces = []
    for i, cv in enumerate(cs):
        r = cv.record
        color = (
            RECOMMENDED
            if top is not None and r.id == top.id
            else BASELINE
            if r.baseline
            else PALETTE[i % len(PALETTE)]
        )
        xs = cv.loads if x_of is None else cv.series[x_of]
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": text(short(r, top)),
                "legendgroup": r.id,
                "showlegend": legend,
                "x": xs,
                "y": cv.series[y],
                "xaxis": axes[0],
                "yaxis": axes[1],
                "line": {
                    "color": color,
                    "width": 3 if top is not None and r.id == top.id else 1.5,
                    "dash": "dash" if r.baseline else "solid",
                },
                "marker": {
                    "color": color,
                    "size": 7,
                    "symbol": ["circle" if ok else "circle-open" for ok in cv.feasible],
                },
                "text": [hover(r)] * len(xs),
                "hovertemplate": "%{text}<br>%{x:,.4~g} → %{y:,.4~g}<extra></extra>",
            }
        )
    return traces


def load_label(cs: Sequence[curves_mod.Curve]) -> str:
    kinds = {c.load_kind for c in cs}
    return "Request rate (req/s)" if kinds == {"request_rate"} else "Concurrency (requests in flight)"


def slo_and_goodput(
    records: Sequence[ExperimentRecord], objective: Objective, top: ExperimentRecord | None
) -> Chart | None:
    chosen = curves_mod.highlighted(records, objective)
    cs = [c for c in curves_mod.curves(chosen, ["goodput", "slo_attainment"]) if c.loads]
    if not cs or not any(v is not None for c in cs for v in c.series["goodput"] + c.series["slo_attainment"]):
        return None
    traces = _curve_traces(cs, None, "goodput", top, ("x", "y"))
    traces += _curve_traces(cs, None, "slo_attainment", top, ("x2", "y2"), legend=False)
    figure = {
        "data": traces,
        "layout": layout(
            grid={"rows": 1, "columns": 2, "pattern": "independent"},
            xaxis=axis(load_label(cs)),
            yaxis=axis(label("goodput")),
            xaxis2=axis(load_label(cs)),
            yaxis2=axis("SLO attainment", tickformat=".0%", range=[0, 1.05]),
            height=420,
        ),
    }
    best_goodput = max(
        ((c, p) for c in cs if (p := curves_mod.peak(c, "goodput")) is not None),
        key=lambda cp: cp[1][1],
        default=None,
    )
    caption = ""
    if best_goodput is not None:
        c, (load, g) = best_goodput
        caption = (
            f"{rid(c.record)} serves the most requests within every SLO: {fmt('goodput', g)} at "
            f"{load_words(c.load_kind, load)}."
        )
        base = next((x for x in cs if x.record.baseline), None)
        if base is not None and base.record.id != c.record.id:
            bp = curves_mod.peak(base, "goodput")
            caption += (
                f" The default configuration peaks at {fmt('goodput', bp[1])}."
                if bp
                else " The default configuration never met the SLOs."
            )
    heaviest = [
        (c, a) for c in cs if c.series["slo_attainment"] and (a := c.series["slo_attainment"][-1]) is not None
    ]
    if heaviest:
        lo = min(heaviest, key=lambda ca: ca[1])
        hi = max(heaviest, key=lambda ca: ca[1])
        caption += (
            f" At the highest load measured, SLO attainment ranges from {percent(lo[1])} "
            f"({rid(lo[0].record)}) "
            f"to {percent(hi[1])} ({rid(hi[0].record)})."
        )
    rows = [
        [rid(c.record), load_words(c.load_kind, load), number(g), percent(a), "yes" if ok else "no"]
        for c in cs
        for load, g, a, ok in zip(
            c.loads, c.series["goodput"], c.series["slo_attainment"], c.feasible, strict=False
        )
    ]
    table = Table(["Experiment", "Load", label("goodput"), "SLO attainment", "Within hard SLOs"], rows)
    chart = Chart("slo-goodput", "SLO attainment and goodput against load", caption.strip(), figure, table)
    chart.notes.append(
        "Shown: the recommendation, the engine's default and the best others; "
        "hollow markers break a hard SLO."
    )
    return chart


def throughput_latency(
    records: Sequence[ExperimentRecord],
    objective: Objective,
    bounds: Sequence[Bound],
    top: ExperimentRecord | None,
) -> Chart | None:
    latency_bound = next((b for b in bounds if b.metric.endswith("_ms")), None)
    latency = latency_bound.metric if latency_bound else "ttft_p90_ms"
    throughput = "output_throughput"
    chosen = curves_mod.highlighted(records, objective)
    cs = [c for c in curves_mod.curves(chosen, [throughput, latency]) if c.loads]
    if not cs:
        return None
    traces = _curve_traces(cs, throughput, latency, top)
    lay = layout(xaxis=axis(label(throughput)), yaxis=axis(label(latency)))
    if latency_bound is not None:
        lay["shapes"] = [
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": latency_bound.max,
                "y1": latency_bound.max,
                "line": {"color": RECOMMENDED, "dash": "dash", "width": 1},
            }
        ]
        lay["annotations"] = [
            {
                "xref": "paper",
                "x": 0,
                "y": latency_bound.max,
                "yanchor": "bottom",
                "xanchor": "left",
                "showarrow": False,
                "text": text(f"SLO {fmt(latency, latency_bound.max)}"),
                "font": {"color": RECOMMENDED},
            }
        ]
    figure = {"data": traces, "layout": lay}
    caption = "Each line is one configuration from light to heavy load; up and to the left is worse."
    within: list[tuple[curves_mod.Curve, float]] = []
    for c in cs:
        pairs = [
            (t, lat)
            for t, lat in zip(c.series[throughput], c.series[latency], strict=False)
            if t is not None and lat is not None and (latency_bound is None or lat <= latency_bound.max)
        ]
        if pairs:
            within.append((c, max(t for t, _ in pairs)))
    if within:
        winner, tput = max(within, key=lambda ct: ct[1])
        bound_words = (
            f"within the {name(latency)} SLO of {fmt(latency, latency_bound.max)}" if latency_bound else ""
        )
        caption = (
            f"{rid(winner.record)} reaches the highest throughput {bound_words}: {fmt(throughput, tput)}."
        ).replace("  ", " ")
        base = next(((c, t) for c, t in within if c.record.baseline), None)
        if base is not None and base[0].record.id != winner.record.id and base[1] > 0:
            caption += (
                f" That is {percent(tput / base[1] - 1, signed=True)} against the default configuration "
                f"({fmt(throughput, base[1])})."
            )
    rows = [
        [rid(c.record), load_words(c.load_kind, load), number(t), number(lat)]
        for c in cs
        for load, t, lat in zip(c.loads, c.series[throughput], c.series[latency], strict=False)
    ]
    table = Table(["Experiment", "Load", label(throughput), label(latency)], rows)
    return Chart("throughput-latency", "Throughput against latency", caption, figure, table)
