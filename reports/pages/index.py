"""The index page's view model: one row per spec, plain JSON so that the build manifest can
cache it and an unchanged spec need not be read again to rebuild the index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reports import compare
from reports.recommend import recommend
from reports.render import (
    condition,
    progress,
    when,
)
from reports.results import SpecResults
from reports.values import (
    config_text,
    fmt,
    name,
    objectives_of,
    value,
)


def index_row(spec: SpecResults) -> dict[str, Any]:
    """What the index shows about one spec: plain JSON, cached in the build manifest so that
    specs that did not change need not be read again to rebuild the index."""
    objectives = objectives_of(spec.status, spec.experiments)
    cond = condition(spec.status)
    fraction, text = progress(spec)
    rec = recommend(spec.current, objectives)
    first = objectives[0]
    best_value = value(rec.record, first.metric) if rec else None
    extra = ""
    if rec is not None and len(objectives) > 1:
        extra = ", ".join(fmt(o.metric, value(rec.record, o.metric)) for o in objectives[1:])
    engines = sorted({compare.engine_version(r) for r in spec.current}) or (
        [spec.status.engine] if spec.status and spec.status.engine else []
    )
    return {
        "name": spec.name,
        "slug": spec.slug,
        "title": spec.title or "",
        "condition": {"label": cond.label, "css": cond.css, "reason": cond.reason, "message": cond.message},
        "progress_fraction": round(fraction, 4),
        "progress_text": text,
        "best_text": fmt(first.metric, best_value) if best_value is not None else "–",
        "best_metric": name(first.metric),
        "best_sort": best_value if best_value is not None else "",
        "best_extra": extra,
        "best_config": config_text(rec.record.config) if rec else "",
        "engine": ", ".join(e for e in engines if e),
        "updated": when(spec.status.updated_at if spec.status else None),
        "updated_sort": (spec.status.updated_at or "") if spec.status else "",
        "experiments": len(spec.experiments),
        "reconciling": spec.reconciling,
    }


def index_context(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    totals = {
        "experiments": sum(r["experiments"] for r in rows),
        "ready": sum(r["condition"]["label"] == "Ready" for r in rows),
        "reconciling": sum(r["condition"]["label"] == "Reconciling" for r in rows),
        "stalled": sum(r["condition"]["label"] == "Stalled" for r in rows),
        "degraded": sum(r["condition"]["label"] == "Degraded" for r in rows),
    }
    return {"specs": [_Row(r) for r in rows], "totals": totals}


class _Row(dict[str, Any]):
    """A cached index row with attribute access for the template."""

    def __getattr__(self, key: str) -> Any:
        try:
            v = self[key]
        except KeyError:
            raise AttributeError(key) from None
        return _Row(v) if isinstance(v, dict) else v
