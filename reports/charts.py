"""Charts as data: a Plotly figure (plain JSON), a caption that states the finding, a data table.

Figures are built as dictionaries following Plotly's JSON schema instead of ``plotly.graph_objects``
objects: validating a figure object costs milliseconds, and a site of ten thousand experiment
pages would spend most of its build doing that. The browser-side ``plotly.js`` (copied from the
installed ``plotly`` package into the site's assets) draws them.

Only SVG trace types are used (``scatter``, ``bar``, ``box``): WebGL traces (``scattergl``,
``parcoords``, 3-D) do not draw in browsers without a GPU, and a report must draw on the jump box.

Every string that came from a spec or a result (names, parameter values) is HTML-escaped before
it enters a figure: Plotly renders a small subset of HTML inside chart text, and it decodes
entities back into plain characters when it draws, so ``<b>`` in a parameter value shows as the
four characters ``<b>`` rather than as bold text (and ``<img onerror=...>`` as text, not as an
image). The JSON itself is made safe for a ``<script>`` element in :mod:`reports.render`.

A caption is a sentence a reader can act on without reading the chart; the table under it holds
the same numbers for screen readers, for copying, and for when JavaScript is off.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reports import compare as compare_mod
from reports import curves as curves_mod
from reports import effects as effects_mod
from reports import history as history_mod
from reports.importance import Importance
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
    param_value,
    percent,
)
from specs.records import ExperimentRecord

RECOMMENDED = "#d1495b"
BASELINE = "#6c757d"
FRONT = "#d1495b"
FEASIBLE = "#2e86ab"
INFEASIBLE = "#b8b8b8"
PALETTE = ("#2e86ab", "#3bb273", "#7768ae", "#e1bc29", "#1b998b", "#8f2d56", "#f18f01", "#5d576b")
BUCKETS = ("#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Chart:
    id: str
    title: str
    caption: str
    figure: dict[str, Any]
    table: Table
    notes: list[str] = field(default_factory=list)
    #: the figure as script-safe JSON, filled in by the renderer
    json: str = ""
    #: spans the page's full width (many panels or axes)
    wide: bool = False


def text(s: object) -> str:
    """A string from a spec or a result, made inert for Plotly's HTML-like chart text."""
    return html.escape(str(s), quote=False)


def rid(r: ExperimentRecord) -> str:
    return f"#{r.id}"


def short(r: ExperimentRecord, top: ExperimentRecord | None = None) -> str:
    """Legend label: the id and its role; the configuration is in the hover text and the table."""
    if top is not None and r.id == top.id:
        return f"{rid(r)} recommended"
    return f"{rid(r)} engine default" if r.baseline else rid(r)


def hover(r: ExperimentRecord) -> str:
    return f"{text(rid(r))}{' (default)' if r.baseline else ''}<br>{text(config_text(r.config))}"


def layout(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "height": 380,
        "margin": {"l": 64, "r": 24, "t": 16, "b": 56},
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
        "hovermode": "closest",
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "legend": {"orientation": "h", "y": -0.22},
        "showlegend": True,
    }
    base.update(extra)
    return base


def axis(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": text(title)},
        "zeroline": False,
        "gridcolor": "#e9ecef",
        "automargin": True,
        **extra,
    }


def _marker_for(r: ExperimentRecord, top: ExperimentRecord | None) -> str:
    if top is not None and r.id == top.id:
        return "recommended"
    if r.baseline:
        return "default"
    return "within SLO" if r.feasible else "breaks an SLO"


# ------------------------------------------------------------------------------------ trade-offs


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
        groups[_marker_for(p.record, top)].append(p)
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


# ------------------------------------------------------------------------------------ load curves


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


def _load_label(cs: Sequence[curves_mod.Curve]) -> str:
    kinds = {c.load_kind for c in cs}
    return "Request rate (req/s)" if kinds == {"request_rate"} else "Concurrency (requests in flight)"


def _load_words(kind: str, v: float | None) -> str:
    if v is None:
        return "no load level"
    return f"{number(v)} req/s" if kind == "request_rate" else f"concurrency {number(v)}"


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
            xaxis=axis(_load_label(cs)),
            yaxis=axis(label("goodput")),
            xaxis2=axis(_load_label(cs)),
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
            f"{_load_words(c.load_kind, load)}."
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
        [rid(c.record), _load_words(c.load_kind, load), number(g), percent(a), "yes" if ok else "no"]
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
        [rid(c.record), _load_words(c.load_kind, load), number(t), number(lat)]
        for c in cs
        for load, t, lat in zip(c.loads, c.series[throughput], c.series[latency], strict=False)
    ]
    table = Table(["Experiment", "Load", label(throughput), label(latency)], rows)
    return Chart("throughput-latency", "Throughput against latency", caption, figure, table)


# ------------------------------------------------------------------------------------ history


def optimization_history(records: Sequence[ExperimentRecord], objective: Objective) -> Chart | None:
    steps = history_mod.history(records, objective)
    if not any(s.value is not None for s in steps):
        return None
    generations = list(dict.fromkeys(s.record.generation for s in steps))
    traces: list[dict[str, Any]] = []
    for gi, gen in enumerate(generations):
        color = PALETTE[gi % len(PALETTE)]
        gsteps = [s for s in steps if s.record.generation == gen]
        label_gen = f"generation {gen[:8]}"
        measured = [s for s in gsteps if s.value is not None]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": text(f"{label_gen}: experiments"),
                "legendgroup": gen,
                "x": [s.index for s in measured],
                "y": [s.value for s in measured],
                "text": [hover(s.record) for s in measured],
                "hovertemplate": "%{text}<br>%{y:,.4~g}<extra></extra>",
                "marker": {
                    "color": color,
                    "size": 7,
                    "symbol": ["circle" if s.record.feasible else "x" for s in measured],
                    "opacity": 0.8,
                },
            }
        )
        line = [s for s in gsteps if s.best_so_far is not None]
        if line:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": text(f"{label_gen}: best so far"),
                    "legendgroup": gen,
                    "x": [s.index for s in line],
                    "y": [s.best_so_far for s in line],
                    "line": {"color": color, "shape": "hv", "width": 2},
                    "hoverinfo": "skip",
                }
            )
    figure = {
        "data": traces,
        "layout": layout(
            xaxis=axis("Experiment (in the order they ran)"), yaxis=axis(label(objective.metric))
        ),
    }
    current = generations[-1]
    gsteps = [s for s in steps if s.record.generation == current]
    found = history_mod.experiments_to_best(steps, current)
    if found is not None and gsteps[-1].best_so_far is not None:
        best_id = gsteps[-1].best_id
        caption = (
            f"The current generation found its best {name(objective.metric)} "
            f"({fmt(objective.metric, gsteps[-1].best_so_far)},"
            f" #{best_id}) after {found} of its {len(gsteps)} experiments"
        )
        caption += (
            "; later experiments did not improve on it." if found < len(gsteps) else ", with the last one."
        )
    else:
        caption = "No experiment of the current generation has met every hard SLO yet."
    failed = sum(s.record.state == "FAILED" for s in gsteps)
    if failed:
        caption += f" {failed} failed and are not drawn (see Failures)."
    rows = [
        [
            str(s.index),
            rid(s.record),
            s.record.generation[:8],
            s.record.state.lower(),
            number(s.value),
            number(s.best_so_far),
        ]
        for s in steps
    ]
    table = Table(["#", "Experiment", "Generation", "State", label(objective.metric), "Best so far"], rows)
    chart = Chart("history", "Optimization history", caption, figure, table)
    chart.notes.append("Crosses broke a hard SLO; the line is the best SLO-compliant value so far.")
    return chart


# ------------------------------------------------------------------------------------ importance, effects


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


# ------------------------------------------------------------------------------------ comparisons


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


# ------------------------------------------------------------------------------------ experiment page


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
        xaxis=axis(_load_label([cv]), type="category"),
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
            f"The highest load within every hard SLO is {_load_words(cv.load_kind, best_load)}, with "
            f"{fmt('output_throughput', cv.series['output_throughput'][i])}."
        )
        broken = [
            (load, ok) for load, ok in zip(cv.loads, cv.feasible, strict=True) if not ok and load > best_load
        ]
        if broken:
            caption += f" From {_load_words(cv.load_kind, broken[0][0])} on, a hard SLO breaks."
    else:
        caption = "No load level met every hard SLO."
    rows = [
        [
            _load_words(cv.load_kind, load),
            *[number(cv.series[m][i]) for m in ["output_throughput", *latency_metrics]],
            "yes" if cv.feasible[i] else "no",
        ]
        for i, load in enumerate(cv.loads)
    ]
    table = Table(
        ["Load", label("output_throughput"), *[label(m) for m in latency_metrics], "Within hard SLOs"], rows
    )
    return Chart("loads", "Throughput and latency by load", caption, {"data": traces, "layout": lay}, table)
