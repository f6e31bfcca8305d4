"""Shared primitives of every chart: the figure and table containers, colours, escaping of
strings from specs and results (see :mod:`reports.charts`), axis and layout defaults.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from reports.values import (
    config_text,
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


def marker_for(r: ExperimentRecord, top: ExperimentRecord | None) -> str:
    if top is not None and r.id == top.id:
        return "recommended"
    if r.baseline:
        return "default"
    return "within SLO" if r.feasible else "breaks an SLO"
