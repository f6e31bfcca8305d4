"""Multi-process load generation against a real local server: one schedule, one clock, every
request measured exactly once, whatever the number of worker processes."""

from __future__ import annotations

import math

import pytest

from backends.loadgen import LoadOptions, TargetConfig, arrival_offsets, run_sync
from backends.loadgen.phase import PhaseResult
from backends.loadgen.records import RequestRecord
from backends.loadgen.runner import collect, summarize_run
from backends.loadgen.workers import default_workers, merge
from tests.fakes.openai_server import MODEL, FakeOpenAI, prompts

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("workers", [2, 3])
def test_closed_loop_over_workers_sends_every_job_once_at_the_concurrency(workers: int) -> None:
    n, c = 40, 6
    with FakeOpenAI(itl_s=0.004) as s:
        run = run_sync(
            collect(
                TargetConfig(s.url, model=MODEL),
                prompts(n, max_tokens=5),
                concurrency=c,
                options=LoadOptions(workers=workers, warmup=3),
            )
        )
        arrivals = len(s.arrivals)
        peak = s.max_in_flight
    assert run.workers == workers
    assert [r.index for r in run.records] == list(range(n)), "no request lost or counted twice"
    assert all(r.ok for r in run.records)
    assert arrivals == n + 3, "the server saw each measured request once, plus the warm-up"
    assert peak <= c, "the streams of all workers together never exceed the concurrency"
    result = summarize_run(run)
    assert result.metrics["completed"] == n and result.measured["workers"] == workers


def test_open_loop_over_workers_keeps_the_one_schedule_and_measures_lateness() -> None:
    n, rate, seed = 30, 60.0, 4
    with FakeOpenAI() as s:
        run = run_sync(
            collect(
                TargetConfig(s.url, model=MODEL),
                prompts(n, max_tokens=2),
                request_rate=rate,
                options=LoadOptions(seed=seed, workers=2),
            )
        )
    assert [r.index for r in run.records] == list(range(n))
    offsets = arrival_offsets(n, rate, seed=seed)
    sched = [r.scheduled_time for r in run.records]
    assert all(t is not None for t in sched)
    start = sched[0]
    assert start is not None
    # both workers scheduled against the same start instant on the shared clock
    assert [t - start for t in sched if t is not None] == pytest.approx(offsets, abs=1e-9)
    delays = [r.send_time - t for r, t in zip(run.records, sched, strict=True) if t is not None]
    assert min(delays) >= 0
    metrics = summarize_run(run).metrics
    p99 = metrics["schedule_delay_p99_ms"]
    assert p99 is not None and p99 == pytest.approx(sorted(d * 1000 for d in delays)[-1], rel=0.5)


def test_a_closed_loop_level_has_no_schedule_delay() -> None:
    with FakeOpenAI() as s:
        run = run_sync(collect(TargetConfig(s.url, model=MODEL), prompts(4), concurrency=2))
    assert summarize_run(run).metrics["schedule_delay_p99_ms"] is None


def test_merge_refuses_a_request_counted_twice() -> None:
    rec = RequestRecord(index=3, send_time=0.0)
    twice = [PhaseResult([rec], [], 1, 1), PhaseResult([RequestRecord(index=3, send_time=0.0)], [], 1, 1)]
    with pytest.raises(RuntimeError, match="measured twice"):
        merge(twice, 10)
    assert [r.index for r in merge([PhaseResult([rec], [], 1, 1)], 10).records] == [3]


def test_default_workers_grow_with_the_streams_up_to_the_free_cores() -> None:
    assert default_workers(1, 100) == 1
    assert default_workers(64, 1000) == 1
    assert 1 <= default_workers(256, 1000) <= 4
    assert default_workers(None, 10) == 1
    assert math.isfinite(default_workers(10_000, 10))
