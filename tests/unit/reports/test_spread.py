"""Repeated load points show their spread beside the median on the experiment page."""

from __future__ import annotations

from reports.pages.experiment import _points_table
from reports.render import environment
from specs.records import LoadPointRecord


def test_a_repeated_point_shows_its_range_and_a_single_one_does_not() -> None:
    repeated = LoadPointRecord(
        load_kind="concurrency",
        load_value=4,
        metrics={"ttft_p50_ms": 12.0, "completed": 30},
        spread={
            "ttft_p50_ms": {"min": 10.0, "median": 12.0, "max": 15.0},
            "completed": {"min": 30, "median": 30, "max": 30},
        },
    )
    single = LoadPointRecord(load_kind="concurrency", load_value=8, metrics={"ttft_p50_ms": 20.0})
    table = _points_table([repeated, single], ["concurrency 4", "concurrency 8"], {})
    macro = environment().from_string('{% from "_macros.html" import points_table %}{{ points_table(t) }}')
    html = macro.render(t=table)
    assert html.count('class="spread"') == 1, "only a metric whose repeats differ gets a range"
    assert ">10–15</small>" in html
