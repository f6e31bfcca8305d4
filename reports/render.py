"""Pages from data: the Jinja2 environment, and what every page's view model shares.

Compute, then render: the analyses (:mod:`reports.recommend`, :mod:`reports.charts`, ...) decide
what is true; the view models (:mod:`reports.pages`, one module per template) only arrange their
answers for the templates, and all HTML is in the templates (``site_templates/``). Autoescaping is
on for every template, so a spec name or a log line is text wherever it lands in HTML. The one
place where data enters a ``<script>`` element — a chart's JSON — goes through
:func:`script_json`, which escapes ``<``, ``>`` and ``&`` as JSON unicode escapes: the browser's
HTML parser then never sees a ``</script>`` and ``JSON.parse`` restores the exact characters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from reports.results import SpecResults, slug
from reports.values import (
    load_words,
)
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


def summary_point(r: ExperimentRecord) -> Any:
    """The load point an experiment is summarised by, or ``None`` (failed before one)."""
    i = r.summary_index
    return r.load_points[i] if i is not None and 0 <= i < len(r.load_points) else None


def summary_load_words(r: ExperimentRecord) -> str:
    point = summary_point(r)
    return "" if point is None else load_words(point.load_kind, point.load_value)
