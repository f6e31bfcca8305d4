"""SLO verdicts, the continuous soft penalty, and the summary load point."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specs.model import Objective, SloBound
from specs.slo import (
    ObjectiveMissing,
    constraint_values,
    evaluate,
    objective_values,
    penalty_factor,
    pick_summary,
)

SOFT = {"tpot_p99_ms": SloBound(max=50, hard=False, weight=2)}
HARD = {"ttft_p90_ms": SloBound(max=500)}
THROUGHPUT = [Objective(metric="output_throughput", direction="maximize")]
LATENCY = [Objective(metric="ttft_p90_ms", direction="minimize")]


def test_penalty_is_continuous_at_the_threshold() -> None:
    at = penalty_factor(evaluate({"tpot_p99_ms": 50.0}, SOFT))
    just_above = penalty_factor(evaluate({"tpot_p99_ms": 50.0001}, SOFT))
    assert at == 1.0
    assert just_above - at < 1e-4


def test_penalty_grows_with_weight_and_violation() -> None:
    assert penalty_factor(evaluate({"tpot_p99_ms": 55.0}, SOFT)) == pytest.approx(1.2)
    assert penalty_factor(evaluate({"tpot_p99_ms": 100.0}, SOFT)) == pytest.approx(3.0)


def test_two_ten_percent_violations_are_mild() -> None:
    slo = {
        "tpot_p99_ms": SloBound(max=50, hard=False),
        "ttft_p99_ms": SloBound(max=500, hard=False),
    }
    verdicts = evaluate({"tpot_p99_ms": 55.0, "ttft_p99_ms": 550.0, "output_throughput": 1000.0}, slo)
    [score] = objective_values({"output_throughput": 1000.0}, THROUGHPUT, verdicts)
    assert score == pytest.approx(1000 / 1.2)


@given(
    raw_ok=st.floats(min_value=0.1, max_value=1e6),
    raw_bad=st.floats(min_value=0.1, max_value=1e6),
    tpot=st.floats(min_value=50.0001, max_value=1e4),
    weight=st.floats(min_value=0.01, max_value=1000),
)
def test_violating_never_beats_compliant_with_better_raw(
    raw_ok: float, raw_bad: float, tpot: float, weight: float
) -> None:
    slo = {"tpot_p99_ms": SloBound(max=50, hard=False, weight=weight)}
    good = {"output_throughput": raw_ok, "tpot_p99_ms": 40.0, "ttft_p90_ms": raw_ok}
    bad = {"output_throughput": raw_bad, "tpot_p99_ms": tpot, "ttft_p90_ms": raw_bad}
    [g] = objective_values(good, THROUGHPUT, evaluate(good, slo))
    [b] = objective_values(bad, THROUGHPUT, evaluate(bad, slo))
    if raw_ok >= raw_bad:
        assert g >= b
    [gl] = objective_values(good, LATENCY, evaluate(good, slo))
    [bl] = objective_values(bad, LATENCY, evaluate(bad, slo))
    if raw_ok <= raw_bad:
        assert gl <= bl


def test_hard_constraints() -> None:
    assert constraint_values(evaluate({"ttft_p90_ms": 400.0}, HARD)) == [pytest.approx(-0.2)]
    assert constraint_values(evaluate({"ttft_p90_ms": 600.0}, HARD)) == [pytest.approx(0.2)]
    assert constraint_values(evaluate({}, HARD)) == [1.0]


def test_summary_is_highest_throughput_within_hard_slo() -> None:
    points = [
        {"output_throughput": 100.0, "ttft_p90_ms": 100.0, "completed": 10},
        {"output_throughput": 300.0, "ttft_p90_ms": 450.0, "completed": 10},
        {"output_throughput": 500.0, "ttft_p90_ms": 900.0, "completed": 10},
    ]
    assert pick_summary(points, HARD) == (1, True)
    assert pick_summary(points, {}) == (2, True)


def test_summary_when_nothing_meets_the_slo() -> None:
    points = [
        {"output_throughput": 100.0, "ttft_p90_ms": 700.0, "completed": 10},
        {"output_throughput": 300.0, "ttft_p90_ms": 900.0, "completed": 10},
    ]
    assert pick_summary(points, HARD) == (0, False)
    assert pick_summary([], HARD) == (None, False)


def test_load_point_with_no_completed_request_is_not_feasible() -> None:
    assert pick_summary([{"completed": 0, "output_throughput": 0.0}], {}) == (0, False)


def test_missing_objective() -> None:
    with pytest.raises(ObjectiveMissing):
        objective_values({"output_throughput": None}, THROUGHPUT, [])


def test_slo_text_grammar_of_the_command_line() -> None:
    from specs.errors import UserError
    from specs.slo import parse_slo_text

    bounds = parse_slo_text("ttft_p90_ms<=500, error_rate<=0.01")
    assert {k: v.max for k, v in bounds.items()} == {"ttft_p90_ms": 500.0, "error_rate": 0.01}
    assert all(v.hard for v in bounds.values())
    assert parse_slo_text(None) == {}
    with pytest.raises(UserError, match=r"unknown SLO metric .*did you mean"):
        parse_slo_text("ttft_p09_ms<=500")
    with pytest.raises(UserError, match="METRIC<=MAX"):
        parse_slo_text("ttft_p90_ms>500")
    with pytest.raises(UserError, match="must be > 0"):
        parse_slo_text("ttft_p90_ms<=inf")
