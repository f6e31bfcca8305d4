"""The offline replay of arrival times (``run_arrivals``): the model of a live run."""

from __future__ import annotations

import pytest

from backends.sim.build import EngineSetup, build
from backends.sim.config import parse_config
from backends.sim.offline import Item, run_arrivals, run_closed_loop


def setup() -> EngineSetup:
    return build(
        parse_config(["--model", "llama-3-8b", "--max-num-seqs", "16", "--max-num-batched-tokens", "2048"])
    )


def test_replaying_a_closed_loop_reproduces_it() -> None:
    """Fed the arrival times a closed loop produced, the replay serves the same requests the same
    way: every TTFT and the duration agree."""
    items = [Item(200 + 7 * i, 16 + i % 5) for i in range(40)]
    closed = run_closed_loop(setup(), items, 8, max_steps=1)
    by_id = {int(r.request_id.split("-")[1]): r for r in closed.requests}
    arrivals = [by_id[i].arrived_at for i in range(len(items))]
    replay = run_arrivals(setup(), items, arrivals, max_steps=1)
    assert replay.duration_s == pytest.approx(closed.duration_s)
    assert sorted(replay.ttfts_ms) == pytest.approx(sorted(closed.ttfts_ms))


def test_a_request_arriving_mid_step_waits_for_the_step_and_counts_from_its_arrival() -> None:
    items = [Item(1500, 64), Item(100, 4)]
    alone = run_arrivals(setup(), items[1:], [0.0]).ttfts_ms[0]
    # the second arrives 1 ms into the first one's prefill: it joins a later step
    both = run_arrivals(setup(), items, [0.0, 0.001])
    ttft = {
        r.prompt_tokens: 1000 * (r.first_token_at - r.arrived_at) for r in both.requests if r.first_token_at
    }
    assert ttft[100] > alone


def test_an_idle_gap_is_idle() -> None:
    items = [Item(100, 4), Item(100, 4)]
    one = run_arrivals(setup(), items[:1], [0.0])
    two = run_arrivals(setup(), items, [0.0, 10.0])
    assert two.duration_s == pytest.approx(10.0 + one.duration_s)
    assert two.ttfts_ms == pytest.approx([one.ttfts_ms[0]] * 2)
