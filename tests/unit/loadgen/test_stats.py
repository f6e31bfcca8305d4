"""Percentiles: linear interpolation, the same numbers as numpy (and so as ``vllm bench serve``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.loadgen import percentile, summarize
from specs.metrics import STATS


def test_percentile_interpolates_between_neighbours() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    # rank (n-1)*q/100: p50 -> 1.5 -> halfway between 20 and 30
    assert percentile(values, 50) == pytest.approx(25.0)
    # p90 -> rank 2.7 -> 30 + 0.7 * 10
    assert percentile(values, 90) == pytest.approx(37.0)
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0


def test_percentile_of_one_and_of_none() -> None:
    assert percentile([7.5], 99) == 7.5
    assert percentile([], 50) is None


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


@settings(deadline=None)  # the first example pays for importing numpy
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=60),
    st.sampled_from([50, 90, 95, 99]),
)
def test_percentile_matches_numpy(values: list[float], q: int) -> None:
    np = pytest.importorskip("numpy")
    expected = float(np.percentile(values, q))
    assert percentile(sorted(values), q) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_summarize_names_and_units() -> None:
    out = summarize([0.1, 0.2, 0.3], "ttft")  # seconds in
    assert set(out) == {f"ttft_{s}_ms" for s in STATS}
    assert out["ttft_mean_ms"] == pytest.approx(200.0)  # milliseconds out
    assert out["ttft_p50_ms"] == pytest.approx(200.0)
    assert out["ttft_p99_ms"] == pytest.approx(298.0)


def test_summarize_empty_is_all_none() -> None:
    assert all(v is None for v in summarize([], "itl").values())
