"""Comparisons across generations and engine versions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reports import compare as compare_mod
from reports.charts._base import PALETTE, RECOMMENDED, Chart, Table, axis, layout, rid, text
from reports.values import (
    Objective,
    fmt,
    label,
    name,
    number,
    percent,
)


def comparison(
    chart_id: str,
    title: str,
    groups: Sequence[compare_mod.Group],
    objective: Objective,
    what: str,
    labels: dict[str, str] | None = None,
) -> Chart | None:
    if len(groups) < 2:
        return None
    labels = labels or {}
    traces: list[dict[str, Any]] = []
    for i, g in enumerate(groups):
        name_g = text(labels.get(g.key, g.key))
        traces.append(
            {
                "type": "box",
                "name": name_g,
                "y": g.values,
                "boxpoints": "all",
                "jitter": 0.4,
                "pointpos": 0,
                "marker": {"color": PALETTE[i % len(PALETTE)], "size": 5},
                "line": {"color": PALETTE[i % len(PALETTE)]},
                "hovertemplate": "%{y:,.4~g}<extra></extra>",
            }
        )
    best_x = [text(labels.get(g.key, g.key)) for g in groups if g.best_value is not None]
    best_y = [g.best_value for g in groups if g.best_value is not None]
    if best_y:
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "best within SLO",
                "x": best_x,
                "y": best_y,
                "marker": {"symbol": "star", "size": 16, "color": RECOMMENDED},
            }
        )
    figure = {"data": traces, "layout": layout(yaxis=axis(label(objective.metric)), xaxis=axis(what))}
    first, last = groups[0], groups[-1]
    delta = compare_mod.change(groups, objective)
    f_label, l_label = labels.get(first.key, first.key), labels.get(last.key, last.key)
    if delta is not None and first.best_value is not None and last.best_value is not None:
        caption = (
            f"The best {name(objective.metric)} within SLO went from "
            f"{fmt(objective.metric, first.best_value)} ({f_label}) "
            f"to {fmt(objective.metric, last.best_value)} ({l_label}): {percent(delta, signed=True)}"
            f"{' better' if delta > 0 else ' worse' if delta < 0 else ''}."
        )
    else:
        caption = f"{f_label} and {l_label} cannot be compared: one of them has no result within SLO."
    rows = [
        [
            labels.get(g.key, g.key),
            str(g.total),
            str(g.feasible),
            str(g.failed),
            number(g.median_value),
            number(g.best_value),
            rid(g.best) if g.best else "–",
        ]
        for g in groups
    ]
    table = Table(
        [
            what,
            "Experiments",
            "Within SLO",
            "Failed",
            f"Median {label(objective.metric)}",
            f"Best {label(objective.metric)}",
            "Best experiment",
        ],
        rows,
    )
    return Chart(chart_id, title, caption, figure, table)
