"""The optimization history: best-so-far of the objective, experiment by experiment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reports import history as history_mod
from reports.charts._base import PALETTE, Chart, Table, axis, hover, layout, rid, text
from reports.values import (
    Objective,
    fmt,
    label,
    name,
    number,
)
from specs.records import ExperimentRecord


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
