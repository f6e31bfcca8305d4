"""The YAML loader: lines, duplicate keys, limits, and the shape of messages."""

from __future__ import annotations

import pytest

from specs import SpecError, load_spec_text
from specs.loader import MAX_BYTES
from tests.conftest import EXAMPLES

GOOD = (EXAMPLES / "quickstart-sim.yaml").read_text()


def problems(text: str | bytes) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    return [str(p) for p in info.value.problems]


def test_valid_example_loads_with_lines() -> None:
    loaded = load_spec_text(GOOD, "s.yaml")
    assert loaded.name == "quickstart-sim"
    line = loaded.line_of(("spec", "search", "parameters", "max-num-seqs"))
    assert line is not None and "max-num-seqs" in GOOD.splitlines()[line - 1]
    assert loaded.problem(("spec", "search", "nope"), "x").line == loaded.line_of(("spec", "search"))


def test_every_error_is_reported_not_only_the_first() -> None:
    text = GOOD.replace("maxExperiments: 12", "maxExperiments: many").replace("seed: 7", "seed: -1")
    found = problems(text)
    assert any("maxExperiments" in p for p in found)
    assert any("seed" in p for p in found)


def test_unknown_field_suggests_the_closest() -> None:
    [p] = problems(GOOD.replace("requestsPerLevel", "requestPerLevel"))
    assert "did you mean 'requestsPerLevel'" in p
    assert p.startswith("s.yaml:")


def test_unknown_field_inside_discriminated_union_suggests_from_that_member() -> None:
    [p] = problems(GOOD.replace("output: {mean: 128}", "output: {mean: 128}, sharedPrefx: 4"))
    assert "did you mean 'sharedPrefix'" in p
    assert "spec.workload.dataset.sharedPrefx" in p


def test_duplicate_keys_are_refused() -> None:
    [p] = problems(GOOD.replace("  suspend: false\n", "") + "metadata: {name: other}\n")
    assert "duplicate key 'metadata'" in p


def test_size_limit() -> None:
    [p] = problems(GOOD + "#" * MAX_BYTES)
    assert "refused" in p


def test_yaml_merge_keys_work() -> None:
    text = (
        GOOD.replace("  workload:\n", "  workload:\n")
        .replace("input: {mean: 1024, stddev: 128}", "input: &len {mean: 1024, stddev: 128}")
        .replace("output: {mean: 128}", "output: {<<: *len, mean: 128}")
    )
    loaded = load_spec_text(text)
    assert loaded.spec.spec.workload.dataset.output.stddev == 128  # type: ignore[union-attr]


def test_generation_ignores_suspend_and_report_but_not_search() -> None:
    base = load_spec_text(GOOD).spec.generation()
    suspended = GOOD.replace("spec:\n", "spec:\n  suspend: true\n", 1)
    assert load_spec_text(suspended).spec.generation() == base
    retitled = GOOD.replace("Quickstart: Llama", "Another title: Llama")
    assert load_spec_text(retitled).spec.generation() == base
    changed = GOOD.replace("maxExperiments: 12", "maxExperiments: 9")
    assert load_spec_text(changed).spec.generation() != base
    # pruning at its default leaves the hash as it was before the field existed; turning it off
    # is a new study
    assert (
        load_spec_text(
            GOOD.replace("maxExperiments: 12", "maxExperiments: 12\n    pruning: true")
        ).spec.generation()
        == base
    )
    assert (
        load_spec_text(
            GOOD.replace("maxExperiments: 12", "maxExperiments: 12\n    pruning: false")
        ).spec.generation()
        != base
    )


def test_non_string_keys_are_strings() -> None:
    found = problems(GOOD.replace("  report:", "  1: x\n  report:"))
    assert any("unknown field '1'" in p for p in found)
