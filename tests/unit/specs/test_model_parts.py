"""Durations, constraints and the search space."""

from __future__ import annotations

import math

import pytest

from specs import load_spec_text
from specs.constraints import ConstraintError, parse_constraint
from specs.durations import parse_duration
from specs.space import feasible_count, grid, raw_size
from tests.conftest import EXAMPLES


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (12, 12), ("2.5", 2.5), ("1d", 86400)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-5m", "m", "", True, None, "5x", -1])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_constraint_with_dashed_names() -> None:
    c = parse_constraint(
        "max-num-batched-tokens >= max-num-seqs * 2", {"max-num-batched-tokens", "max-num-seqs"}
    )
    assert c.evaluate({"max-num-batched-tokens": 64, "max-num-seqs": 32})
    assert not c.evaluate({"max-num-batched-tokens": 63, "max-num-seqs": 32})
    # a flag left at the engine default does not constrain
    assert c.evaluate({"max-num-seqs": 32})


def test_constraint_boolean_logic_and_strings() -> None:
    c = parse_constraint("tp == 1 or kvcache_dtype != 'auto'", {"tp", "kvcache_dtype"})
    assert c.evaluate({"tp": 1, "kvcache_dtype": "auto"})
    assert not c.evaluate({"tp": 2, "kvcache_dtype": "auto"})


@pytest.mark.parametrize(
    "bad",
    ["a >= ", "a.__class__ > 1", "(lambda: 1)() > 0", "a", "[1] > a", "a ** 2 > 1", "open('x') > 1", "b > 1"],
)
def test_constraint_rejects(bad: str) -> None:
    with pytest.raises(ConstraintError):
        parse_constraint(bad, {"a"})


def test_space_size_and_grid() -> None:
    spec = load_spec_text((EXAMPLES / "quickstart-sim.yaml").read_text()).spec
    assert raw_size(spec) == 5 * 4 * 2 * 2
    configs = list(grid(spec))
    assert all(c["max-num-batched-tokens"] >= c["max-num-seqs"] for c in configs)
    assert feasible_count(spec) == len(configs) == 80
    assert set(configs[0]) == {
        "max-num-seqs",
        "max-num-batched-tokens",
        "enable-chunked-prefill",
        "quant.kvcache_dtype",
    }


def test_continuous_space() -> None:
    text = (
        (EXAMPLES / "quickstart-sim.yaml")
        .read_text()
        .replace(
            "max-num-seqs: {values: [16, 32, 64, 128, 256]}", "gpu-memory-utilization: {low: 0.5, high: 0.9}"
        )
        .replace('constraints: ["max-num-batched-tokens >= max-num-seqs"]', "")
    )
    spec = load_spec_text(text).spec
    assert math.isinf(raw_size(spec))
    assert feasible_count(spec) is None
    assert {c["gpu-memory-utilization"] for c in grid(spec)} == {0.5, 0.7, 0.9}


def test_int_range_with_step() -> None:
    text = (
        (EXAMPLES / "quickstart-sim.yaml")
        .read_text()
        .replace(
            "max-num-seqs: {values: [16, 32, 64, 128, 256]}", "max-num-seqs: {low: 16, high: 64, step: 16}"
        )
    )
    spec = load_spec_text(text).spec
    assert spec.spec.search.parameters["max-num-seqs"].grid() == [16, 32, 48, 64]
