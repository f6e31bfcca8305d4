"""Charts: Plotly JSON that draws, captions that state a finding, tables with the same numbers, and
strings from results that stay text."""

from __future__ import annotations

import json

import pytest

from reports import charts, importance
from reports.render import script_json
from reports.values import Objective, fmt, number, param_value, percent, slo_bounds
from specs.ranking import best
from specs.records import ExperimentRecord
from tests.unit.reports.conftest import XSS_VALUE, xss_plan
from tests.unit.reports.factory import make_records

THROUGHPUT = Objective("output_throughput_per_gpu", "maximize")
SVG_TRACES = {"scatter", "bar", "box"}


def all_charts(records: list[ExperimentRecord]) -> list[charts.Chart]:
    current = [r for r in records if r.generation == records[-1].generation]
    bounds = slo_bounds(current)
    top = best(current)
    pair = charts.tradeoff_objectives([THROUGHPUT], bounds)
    built = [
        charts.tradeoff("tradeoff", "t", current, pair, top),
        # per-GPU efficiency is drawn only when the objective is not per GPU already
        charts.efficiency(current, [Objective("output_throughput", "maximize"), *pair[1:]], top),
        charts.slo_and_goodput(current, THROUGHPUT, top),
        charts.throughput_latency(current, THROUGHPUT, bounds, top),
        charts.optimization_history(records, THROUGHPUT),
        charts.importance(importance.importance(current, THROUGHPUT), THROUGHPUT, 0, 8),
        charts.slices(current, THROUGHPUT),
        charts.parallel_coordinates(current, THROUGHPUT),
        charts.experiment_loads(next(r for r in current if r.state == "COMPLETE"), bounds),
    ]
    return [c for c in built if c is not None]


def test_every_chart_is_svg_with_data_a_caption_and_a_table(records: list[ExperimentRecord]) -> None:
    built = all_charts(records)
    assert len(built) == 9
    assert (
        charts.efficiency([r for r in records if r.generation == records[-1].generation], [THROUGHPUT], None)
        is None
    )
    for c in built:
        assert c.caption.endswith(".") and len(c.caption) > 30, c.id
        assert c.table.rows and all(len(r) == len(c.table.headers) for r in c.table.rows), c.id
        traces = c.figure["data"]
        assert traces and {t["type"] for t in traces} <= SVG_TRACES, c.id
        assert any(any(v is not None for v in (t.get("y") or t.get("x") or [])) for t in traces), c.id
        json.dumps(c.figure, allow_nan=False)  # plain JSON, no NaN


def test_tradeoff_caption_names_the_recommendation(records: list[ExperimentRecord]) -> None:
    current = [r for r in records if r.generation == records[-1].generation]
    top = best(current)
    assert top is not None
    c = charts.tradeoff("t", "t", current, charts.tradeoff_objectives([THROUGHPUT], slo_bounds(current)), top)
    assert c is not None
    assert f"#{top.id}" in c.caption
    assert fmt(THROUGHPUT.metric, top.summary[THROUGHPUT.metric]) in c.caption
    rec_trace = next(t for t in c.figure["data"] if t.get("name") == "recommended")
    assert rec_trace["x"] == [top.summary[THROUGHPUT.metric]]


def test_comparison_needs_two_groups(records: list[ExperimentRecord]) -> None:
    from reports import compare

    gens = compare.by_generation(records, THROUGHPUT)
    c = charts.comparison("g", "Generations", gens, THROUGHPUT, "Generation")
    assert (
        c is not None
        and "went from" in c.caption
        and percent(compare.change(gens, THROUGHPUT), signed=True) in c.caption
    )
    assert charts.comparison("g", "Generations", gens[:1], THROUGHPUT, "Generation") is None


def test_strings_from_results_are_inert_in_chart_text() -> None:
    records = make_records(xss_plan())
    blob = json.dumps([c.figure for c in all_charts(records)])
    assert "</script>" not in blob and "<script>" not in blob
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=3&lt;/script&gt;" in blob


def test_script_json_cannot_close_the_script_element() -> None:
    data = {"name": XSS_VALUE, "u": "\u2028<!--", "n": [1.5, None]}
    text = str(script_json(data))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == data


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (4617.5, "4,618"),
        (46.71, "46.7"),
        (9.876, "9.88"),
        (16.0, "16"),
        (0.01234, "0.0123"),
        (None, "–"),
        (float("nan"), "–"),
        (-150.5, "-150"),
        (0, "0"),
    ],
)
def test_numbers_read_well(value: float | None, text: str) -> None:
    assert number(value) == text


def test_units_and_values() -> None:
    assert fmt("ttft_p90_ms", 412.3) == "412 ms"
    assert fmt("slo_attainment", 0.975) == "97.5 %"
    assert fmt("output_throughput", 4590) == "4,590 tok/s"
    assert param_value(True) == "true" and param_value(2.0) == "2" and param_value(0.9) == "0.9"
    assert percent(-0.31, signed=True) == "−31 %"
