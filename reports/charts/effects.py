"""Which parameters matter: importance, one-parameter slices, parallel coordinates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from reports import effects as effects_mod
from reports.charts._base import (
    BUCKETS,
    FEASIBLE,
    INFEASIBLE,
    RECOMMENDED,
    Chart,
    Table,
    axis,
    hover,
    layout,
    rid,
    text,
)
from reports.importance import Importance
from reports.values import (
    Objective,
    fmt,
    label,
    name,
    number,
    param_value,
    percent,
)
from specs.records import ExperimentRecord


def importance(imp: Importance | None, objective: Objective, completed: int, minimum: int) -> Chart | None:
    if imp is None:
        return None
    items = list(imp.values.items())
    figure = {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [v for _, v in reversed(items)],
                "y": [text(k) for k, _ in reversed(items)],
                "marker": {"color": FEASIBLE},
                "hovertemplate": "%{y}: %{x:.0%}<extra></extra>",
                "name": "importance",
            }
        ],
        "layout": layout(
            xaxis=axis("Share of the variation explained", tickformat=".0%"),
            yaxis=axis(""),
            showlegend=False,
            height=max(220, 60 + 34 * len(items)),
            margin={"l": 180, "r": 24, "t": 16, "b": 56},
        ),
    }
    top_k, top_v = items[0]
    caption = (
        f"{top_k} matters most for {name(objective.metric)} ({percent(top_v)} of the variation explained)"
    )
    if len(items) > 1:
        second_k, second_v = items[1]
        caption += f", then {second_k} ({percent(second_v)})"
    low = [k for k, v in items if v < 0.05]
    caption += "." + (f" {', '.join(low)} barely matter: fix them and search the rest." if low else "")
    table = Table(["Parameter", "Importance"], [[k, percent(v)] for k, v in items])
    chart = Chart("importance", "Parameter importance", caption, figure, table)
    chart.notes.append(
        f"Estimated with Optuna's {imp.method} evaluator from {imp.trials} completed experiments"
        + (" (fANOVA needs scikit-learn, which is not installed)." if imp.method != "fANOVA" else ".")
    )
    return chart


def importance_missing(completed: int, minimum: int) -> str:
    return (
        f"Parameter importance needs at least {minimum} completed experiments with two or more "
        "parameters that "
        f"varied; this generation has {completed} completed."
    )


def slices(records: Sequence[ExperimentRecord], objective: Objective, limit: int = 6) -> Chart | None:
    sl = sorted(effects_mod.slices(records, objective), key=lambda s: -s.spread)[:limit]
    if not sl:
        return None
    traces: list[dict[str, Any]] = []
    lay = layout(grid={"rows": 1, "columns": len(sl), "pattern": "independent"}, showlegend=False, height=340)
    for i, s in enumerate(sl, start=1):
        suffix = "" if i == 1 else str(i)
        xs = [x if s.numeric else param_value(x) for x in s.xs]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [x if s.numeric else text(x) for x in xs],
                "y": s.ys,
                "xaxis": f"x{suffix}",
                "yaxis": f"y{suffix}",
                "name": text(s.param),
                "text": [hover(r) for r in s.records],
                "hovertemplate": "%{text}<br>%{y:,.4~g}<extra></extra>",
                "marker": {
                    "size": 7,
                    "opacity": 0.75,
                    "color": [FEASIBLE if r.feasible else INFEASIBLE for r in s.records],
                },
            }
        )
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": [m if s.numeric else text(param_value(m)) for m, _ in s.medians],
                "y": [v for _, v in s.medians],
                "xaxis": f"x{suffix}",
                "yaxis": f"y{suffix}",
                "name": "median",
                "line": {"color": RECOMMENDED, "width": 2},
                "hoverinfo": "skip",
            }
        )
        x_extra: dict[str, Any] = {}
        if s.numeric:
            lo, hi = min(s.xs), max(s.xs)
            if lo > 0 and hi / lo >= 16:
                x_extra["type"] = "log"
            if len(s.medians) <= 12:  # ticks at the values searched, not at round numbers between them
                x_extra["tickvals"] = [m for m, _ in s.medians]
                x_extra["ticktext"] = [text(param_value(m)) for m, _ in s.medians]
        else:
            x_extra["type"] = "category"
            x_extra["categoryorder"] = "array"
            x_extra["categoryarray"] = [text(param_value(m)) for m, _ in s.medians]
        lay[f"xaxis{suffix}"] = axis(s.param, **x_extra)
        lay[f"yaxis{suffix}"] = axis(label(objective.metric) if i == 1 else "")
    strongest = sl[0]
    lo_v, lo_m = min(strongest.medians, key=lambda vm: vm[1])
    hi_v, hi_m = max(strongest.medians, key=lambda vm: vm[1])
    good_v, good_m, bad_v, bad_m = (
        (hi_v, hi_m, lo_v, lo_m) if objective.direction == "maximize" else (lo_v, lo_m, hi_v, hi_m)
    )
    caption = (
        f"{strongest.param} moves {name(objective.metric)} the most: the median is "
        f"{fmt(objective.metric, good_m)} "
        f"with {strongest.param}={param_value(good_v)} and {fmt(objective.metric, bad_m)} with "
        f"{strongest.param}={param_value(bad_v)}."
    )
    rows = [
        [s.param, param_value(v), number(m), str(sum(1 for x in s.xs if x == v))]
        for s in sl
        for v, m in s.medians
    ]
    table = Table(["Parameter", "Value", f"Median {label(objective.metric)}", "Experiments"], rows)
    chart = Chart(
        "slices",
        "Parameter effects: slices",
        caption,
        figure={"data": traces, "layout": lay},
        table=table,
        wide=True,
    )
    chart.notes.append(
        "Each panel: every completed experiment (grey broke a hard SLO) and the median per value."
    )
    return chart


def parallel_coordinates(records: Sequence[ExperimentRecord], objective: Objective) -> Chart | None:
    par = effects_mod.parallel(records, objective)
    if par is None:
        return None
    ordered = sorted(
        par.lines, key=lambda ln: ln.objective if objective.direction == "maximize" else -ln.objective
    )
    n = len(ordered)
    traces: list[dict[str, Any]] = []
    for b, color in enumerate(BUCKETS):
        members = ordered[b * n // len(BUCKETS) : (b + 1) * n // len(BUCKETS)]
        if not members:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        texts: list[str | None] = []
        for ln in members:
            for i, pos in enumerate(ln.positions):
                xs.append(i)
                ys.append(pos)
                texts.append(hover(ln.record))
            xs.append(None)
            ys.append(None)
            texts.append(None)
        lo = members[0].objective
        hi = members[-1].objective
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{'top' if b == len(BUCKETS) - 1 else 'bottom' if b == 0 else 'middle'} fifth: "
                f"{number(min(lo, hi))}–{number(max(lo, hi))}",
                "x": xs,
                "y": ys,
                "text": texts,
                "hovertemplate": "%{text}<extra></extra>",
                "line": {"color": color, "width": 1.5 + b * 0.5},
                "marker": {"color": color, "size": 4},
                "connectgaps": False,
            }
        )
    annotations = []
    for i, ax in enumerate(par.axes):
        annotations.append(
            {
                "x": i,
                "y": 1.08,
                "xref": "x",
                "yref": "y",
                "showarrow": False,
                "text": f"<b>{text(name(ax.name) if i == len(par.axes) - 1 else ax.name)}</b>",
                "yanchor": "bottom",
            }
        )
        for pos, tick in ax.ticks:
            annotations.append(
                {
                    "x": i,
                    "y": pos,
                    "xref": "x",
                    "yref": "y",
                    "showarrow": False,
                    "text": text(tick),
                    "xanchor": "right",
                    "xshift": -4,
                    "font": {"size": 10, "color": "#495057"},
                }
            )
    shapes = [
        {
            "type": "line",
            "x0": i,
            "x1": i,
            "y0": 0,
            "y1": 1,
            "xref": "x",
            "yref": "y",
            "line": {"color": "#adb5bd", "width": 1},
        }
        for i in range(len(par.axes))
    ]
    lay = layout(
        xaxis={"visible": False, "range": [-0.6, len(par.axes) - 0.6]},
        yaxis={"visible": False, "range": [-0.05, 1.2]},
        annotations=annotations,
        shapes=shapes,
        height=420,
        margin={"l": 24, "r": 24, "t": 16, "b": 40},
    )
    # the caption: what the best fifth have in common
    top = ordered[-max(1, n // 5) :]
    common = []
    for ax in par.axes[:-1]:
        vals = Counter(
            param_value(ln.record.config.get(ax.name)) for ln in top if ax.name in ln.record.config
        )
        if vals:
            v, count = vals.most_common(1)[0]
            share = count / len(top)
            if share >= 0.75 and len(ax.ticks) > 1:
                common.append((share, f"{ax.name}={v}"))
    common.sort(reverse=True)
    if common:
        parts = [f"{percent(s)} use {what}" for s, what in common[:3]]
        caption = f"Of the best fifth of experiments by {name(objective.metric)}, " + ", ".join(parts) + "."
    else:
        caption = (
            f"The best fifth of experiments by {name(objective.metric)} share no single setting: "
            "several regions of the space work."
        )
    headers = ["Experiment", *[ax.name for ax in par.axes[:-1]], label(objective.metric)]
    rows = [
        [
            rid(ln.record),
            *[param_value(ln.record.config.get(ax.name, "")) for ax in par.axes[:-1]],
            number(ln.objective),
        ]
        for ln in sorted(par.lines, key=lambda ln: ln.record.id)
    ]
    chart = Chart(
        "parallel",
        "Parameter effects: parallel coordinates",
        caption,
        {"data": traces, "layout": lay},
        Table(headers, rows),
        wide=True,
    )
    chart.notes.append(
        "Each line is one completed experiment across its parameters, ending at its objective; "
        "darker is better."
    )
    return chart
