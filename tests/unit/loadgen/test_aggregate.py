"""Every metric formula of docs/architecture.md section 5, on hand-built request records.

Expected values are worked out by hand in the comments from the definitions, not copied from
the implementation's output.
"""

from __future__ import annotations

import pytest

from backends.loadgen import RequestRecord, aggregate, is_good
from specs.metrics import ALL_METRICS, LATENCY_METRICS
from specs.model import SloBound
from specs.records import LoadPointRecord
from tests.unit.loadgen.records import failed, ok


def agg(records: list[RequestRecord], **kwargs: object) -> LoadPointRecord:
    return aggregate(records, load_kind="concurrency", load_value=4, **kwargs)  # type: ignore[arg-type]


def test_one_request_every_formula() -> None:
    # sent at 0, tokens at 100/150/250/300 ms, last byte at 320 ms; usage: 10 in, 4 out
    m = agg([ok(0.0, [0.10, 0.15, 0.25, 0.30], 0.32, out=4, inp=10)]).metrics
    assert m["ttft_mean_ms"] == pytest.approx(100.0)
    assert m["e2e_mean_ms"] == pytest.approx(320.0)
    assert m["tpot_mean_ms"] == pytest.approx((320.0 - 100.0) / 3)
    # ITL gaps 50, 100, 50 ms
    assert m["itl_mean_ms"] == pytest.approx(200.0 / 3)
    assert m["itl_p50_ms"] == pytest.approx(50.0)
    assert m["itl_p99_ms"] == pytest.approx(50.0 + 0.98 * 50.0)  # rank 1.98 of [50, 50, 100]
    assert m["duration_s"] == pytest.approx(0.32)
    assert m["request_throughput"] == pytest.approx(1 / 0.32)
    assert m["output_throughput"] == pytest.approx(4 / 0.32)
    assert m["total_throughput"] == pytest.approx(14 / 0.32)
    assert m["completed"] == 1
    assert m["failed"] == 0
    assert m["error_rate"] == 0.0


def test_every_metric_name_is_present() -> None:
    result = agg([ok(0.0, [0.1, 0.2], out=2)])
    assert set(result.metrics) == set(ALL_METRICS)
    assert result.source == "autotuner"
    assert result.load_kind == "concurrency" and result.load_value == 4


def test_tpot_needs_more_than_one_token() -> None:
    one = ok(0.0, [0.2], out=1)
    m = agg([one]).metrics
    assert all(m[f"tpot_{s}_ms"] is None for s in ("mean", "p50", "p90", "p95", "p99"))
    assert all(m[f"itl_{s}_ms"] is None for s in ("mean", "p50", "p99"))
    assert m["ttft_p50_ms"] == pytest.approx(200.0)
    assert m["completed"] == 1

    # mixed: only the three-token request gives a TPOT sample, (0.5 - 0.1) / 2 = 200 ms
    m = agg([one, ok(0.0, [0.1, 0.3, 0.5], out=3)]).metrics
    assert m["tpot_mean_ms"] == pytest.approx(200.0)
    assert m["tpot_p99_ms"] == pytest.approx(200.0)
    assert m["ttft_mean_ms"] == pytest.approx(150.0)  # (200 + 100) / 2: both count for TTFT


def test_itl_pools_gaps_over_requests() -> None:
    # gaps: request a 10 ms; request b 30 ms and 50 ms -> pooled [10, 30, 50]
    m = agg([ok(0.0, [0.1, 0.11], out=2), ok(0.0, [0.1, 0.13, 0.18], out=3)]).metrics
    assert m["itl_mean_ms"] == pytest.approx(30.0)
    assert m["itl_p50_ms"] == pytest.approx(30.0)
    assert m["itl_p90_ms"] == pytest.approx(30.0 + 0.8 * 20.0)  # rank 1.8


def test_failed_requests_are_counted_not_measured() -> None:
    records = [
        ok(0.0, [0.1, 0.2], out=2),
        failed(0.0, 0.5, "http_500"),
        failed(0.2, 0.3, "timeout"),
    ]
    result = agg(records)
    m = result.metrics
    assert m["completed"] == 1
    assert m["failed"] == 2
    assert m["error_rate"] == pytest.approx(2 / 3)
    assert result.errors == {"http_500": 1, "timeout": 1}
    # latencies come from the success only
    assert m["ttft_p99_ms"] == pytest.approx(100.0)
    # duration spans the failures too: first send 0 to last end 0.5 s
    assert m["duration_s"] == pytest.approx(0.5)
    assert m["request_throughput"] == pytest.approx(2.0)
    # without SLOs every success is good; attainment is over all sent requests
    assert m["slo_attainment"] == pytest.approx(1 / 3)
    assert m["goodput"] == pytest.approx(2.0)


def test_only_failures_gives_zero_rates_and_no_latencies() -> None:
    m = agg([failed(0.0, 1.0), failed(0.5, 2.0, "connection")]).metrics
    assert m["completed"] == 0 and m["failed"] == 2
    assert m["error_rate"] == 1.0
    assert m["slo_attainment"] == 0.0
    assert m["request_throughput"] == 0.0  # measurable: nothing succeeded in 2 s
    assert all(m[name] is None for name in LATENCY_METRICS)


def test_empty_load_point() -> None:
    result = agg([])
    m = result.metrics
    assert set(m) == set(ALL_METRICS)
    assert m["completed"] == 0 and m["failed"] == 0
    for name in ALL_METRICS:
        if name not in ("completed", "failed"):
            assert m[name] is None, name
    assert result.errors == {}


def test_success_without_content_counts_as_failure() -> None:
    rec = RequestRecord(index=0, send_time=0.0, end_time=0.1)  # no error, but not one token
    result = agg([rec, ok(0.0, [0.1, 0.2], out=2)])
    assert result.metrics["failed"] == 1
    assert result.errors == {"no_content": 1}


def test_usage_fallback_counts_chunks_and_says_so() -> None:
    result = agg([ok(0.0, [0.1, 0.2, 0.3], out=None, inp=None, expected_input=20)])
    m = result.metrics
    assert m["output_throughput"] == pytest.approx(3 / 0.3)  # three chunks taken as three tokens
    assert m["tpot_mean_ms"] == pytest.approx((300.0 - 100.0) / 2)
    assert m["total_throughput"] == pytest.approx(23 / 0.3)  # input from the dataset
    assert any("counted streamed content chunks" in n for n in result.notes)
    assert any("come from the dataset" in n for n in result.notes)
    assert result.extra["total_output_tokens"] == 3


def test_usage_wins_over_chunk_count() -> None:
    # two chunks that carried 6 tokens (several tokens per chunk): usage says 6
    result = agg([ok(0.0, [0.1, 0.3], out=6)])
    assert result.metrics["output_throughput"] == pytest.approx(6 / 0.3)
    assert result.metrics["tpot_mean_ms"] == pytest.approx(200.0 / 5)
    assert not any("chunks" in n for n in result.notes)


def test_unknown_input_tokens_leave_total_throughput_unknown() -> None:
    result = agg([ok(0.0, [0.1, 0.2], out=2, inp=None)])
    assert result.metrics["total_throughput"] is None
    assert result.metrics["total_throughput_per_gpu"] is None
    assert result.metrics["output_throughput"] is not None
    assert any("total_throughput unknown" in n for n in result.notes)


def test_goodput_and_attainment_under_a_ttft_slo() -> None:
    slo = {"ttft_p90_ms": SloBound(max=125)}
    records = [
        ok(0.0, [0.10, 0.2], 0.4, out=2),  # ttft 100: good
        ok(0.0, [0.20, 0.3], 0.4, out=2),  # ttft 200: not good
        failed(0.0, 0.4),  # failed: never good
        ok(0.0, [0.125, 0.2], 0.4, out=2),  # ttft exactly 125: within the bound (<=)
    ]
    result = agg(records, slo=slo)
    m = result.metrics
    assert result.extra["good"] == 2
    assert m["goodput"] == pytest.approx(2 / 0.4)
    assert m["slo_attainment"] == pytest.approx(2 / 4)
    assert not any("no SLOs given" in n for n in result.notes)


def test_itl_slo_judges_the_largest_gap_of_a_request() -> None:
    slo = {"itl_p99_ms": SloBound(max=60)}
    smooth = ok(0.0, [0.1, 0.15, 0.2], out=3)  # gaps 50, 50
    stall = ok(0.0, [0.1, 0.15, 0.25], out=3)  # gaps 50, 100: one stall over the bound
    assert is_good(smooth, slo)
    assert not is_good(stall, slo)


def test_tpot_and_itl_slos_do_not_reject_one_token_answers() -> None:
    slo = {"tpot_p99_ms": SloBound(max=1), "itl_p50_ms": SloBound(max=1)}
    assert is_good(ok(0.0, [0.2], out=1), slo)


def test_every_per_request_slo_must_hold_hard_or_soft() -> None:
    rec = ok(0.0, [0.1, 0.2], 0.9, out=2)  # ttft 100, tpot 800, e2e 900
    assert is_good(rec, {"ttft_p50_ms": SloBound(max=200)})
    assert not is_good(rec, {"ttft_p50_ms": SloBound(max=200), "e2e_p99_ms": SloBound(max=800)})
    assert not is_good(rec, {"tpot_p90_ms": SloBound(max=500, hard=False)})
    # error_rate is a load-point SLO, not a per-request one
    assert is_good(rec, {"error_rate": SloBound(max=0.01)})
    assert not is_good(failed(0.0, 0.1), {})


def test_per_gpu_metrics() -> None:
    records = [ok(0.0, [0.1, 0.2], 0.5, out=2, inp=8)]
    two = agg(records, gpus=2).metrics
    assert two["output_throughput_per_gpu"] == pytest.approx(2 / 0.5 / 2)
    assert two["total_throughput_per_gpu"] == pytest.approx(10 / 0.5 / 2)
    assert two["goodput_per_gpu"] == pytest.approx(1 / 0.5 / 2)
    zero = agg(records, gpus=0).metrics
    assert zero["output_throughput_per_gpu"] is None
    assert zero["goodput_per_gpu"] is None
    assert zero["output_throughput"] == pytest.approx(4.0)


def test_notes_are_kept() -> None:
    result = agg([], notes=["warm-up failed"])
    assert result.notes[0] == "warm-up failed"
