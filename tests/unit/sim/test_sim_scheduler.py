"""Continuous batching without HTTP: admission limits, chunked prefill, preemption, folding."""

from __future__ import annotations

import dataclasses

import pytest

from backends.sim import SimConfig, build
from backends.sim.build import EngineSetup, MemoryPlan
from backends.sim.offline import Item, new_scheduler, run_closed_loop
from backends.sim.request import SimRequest, Status
from backends.sim.scheduler import Scheduler


def scheduler(**overrides: object) -> Scheduler:
    return new_scheduler(build(SimConfig(**overrides)))  # type: ignore[arg-type]


def add(sched: Scheduler, prompt: int, output: int, name: str = "r") -> SimRequest:
    req = SimRequest(name, prompt, output)
    sched.add(req)
    return req


def test_max_num_seqs_caps_the_running_batch() -> None:
    sched = scheduler(max_num_seqs=4)
    reqs = [add(sched, 10, 50, str(i)) for i in range(10)]
    sched.step()
    assert len(sched.running) == 4 and len(sched.waiting) == 6
    assert all(r.status is Status.RUNNING for r in reqs[:4])


def test_token_budget_caps_a_step_and_chunks_long_prompts() -> None:
    sched = scheduler(max_num_batched_tokens=1024, max_num_seqs=8)
    long = add(sched, 3000, 5, "long")
    short = add(sched, 100, 5, "short")
    result = sched.step()
    assert result.scheduled_tokens == 1024 and long.num_computed == 1024
    assert short.status is Status.WAITING  # the budget is gone
    sched.step()
    assert long.num_computed == 2048
    sched.step()  # the last 952 tokens, plus 72 of the short prompt
    assert long.num_output == 1 and long.first_token_at is not None
    assert short.num_computed == 72


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget() -> None:
    sched = scheduler(enable_chunked_prefill=False, max_num_batched_tokens=8192, max_num_seqs=8)
    first = add(sched, 5000, 4, "first")
    second = add(sched, 5000, 4, "second")
    result = sched.step()
    assert result.scheduled_tokens == 5000
    assert first.num_output == 1 and second.status is Status.WAITING
    sched.step()
    assert second.num_output == 1


def test_preemption_when_blocks_run_out_and_everyone_still_finishes() -> None:
    setup = build(SimConfig(max_num_seqs=16))
    small = dataclasses.replace(setup, memory=dataclasses.replace(setup.memory, num_blocks=40))
    result = run_closed_loop(small, [Item(64, 64) for _ in range(24)], concurrency=16)
    assert result.preemptions > 0
    assert len(result.requests) == 24
    assert all(r.num_output == 64 for r in result.requests)
    assert any(r.preemptions for r in result.requests)


def test_the_newest_sequence_is_preempted() -> None:
    setup = build(SimConfig(max_num_seqs=8, block_size=16))
    tiny: EngineSetup = dataclasses.replace(setup, memory=dataclasses.replace(setup.memory, num_blocks=4))
    sched = new_scheduler(tiny)
    old = add(sched, 16, 40, "old")
    new = add(sched, 16, 40, "new")
    sched.step()  # both prefill: 2 blocks in use
    for _ in range(20):
        sched.step()
        if new.preemptions:
            break
    assert new.preemptions == 1 and old.preemptions == 0


def test_abort_frees_the_blocks() -> None:
    sched = scheduler()
    req = add(sched, 500, 100)
    sched.step()
    assert sched.kv.free_blocks < sched.kv.num_blocks
    sched.abort(req)
    sched.abort(req)  # idempotent
    assert sched.kv.free_blocks == sched.kv.num_blocks and not sched.has_work()
    assert req.status is Status.ABORTED


def test_folded_decode_runs_equal_single_steps() -> None:
    setup = build(SimConfig(max_num_seqs=32))
    items = [Item(100 + 37 * (i % 7), 20 + 11 * (i % 5)) for i in range(80)]
    folded = run_closed_loop(setup, items, concurrency=48)
    single = run_closed_loop(setup, items, concurrency=48, max_steps=1)
    assert folded.steps == single.steps
    assert folded.duration_s == pytest.approx(single.duration_s, rel=1e-9)
    by_id = {r.request_id: r for r in single.requests}
    for r in folded.requests:
        s = by_id[r.request_id]
        assert r.num_output == s.num_output
        assert r.first_token_at == pytest.approx(s.first_token_at, rel=1e-9)
        assert r.finished_at == pytest.approx(s.finished_at, rel=1e-9)


def test_same_inputs_same_schedule() -> None:
    setup = build(SimConfig(max_num_seqs=16, seed=3))
    items = [Item(50 + i, 10 + i % 9) for i in range(40)]
    a = run_closed_loop(setup, items, concurrency=20)
    b = run_closed_loop(setup, items, concurrency=20)
    assert [(r.request_id, r.first_token_at, r.finished_at) for r in a.requests] == [
        (r.request_id, r.first_token_at, r.finished_at) for r in b.requests
    ]


def test_memory_plan_fields_are_what_the_scheduler_uses() -> None:
    setup = build(SimConfig(block_size=32))
    sched = new_scheduler(setup)
    assert isinstance(setup.memory, MemoryPlan)
    assert sched.kv.num_blocks == setup.memory.num_blocks and sched.kv.block_size == 32
