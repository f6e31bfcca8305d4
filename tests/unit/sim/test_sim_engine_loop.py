"""The asyncio engine loop without HTTP: pacing by the time scale, announcements, shutdown."""

from __future__ import annotations

import asyncio
import time

from backends.sim import SimConfig, build
from backends.sim.api import parse_generation
from backends.sim.engine import AsyncEngine, Stream, flush_interval


def _engine(**config: object) -> AsyncEngine:
    return AsyncEngine(build(SimConfig(startup_seconds=0, **config)))  # type: ignore[arg-type]


def _submit(engine: AsyncEngine, prompt: str, max_tokens: int, ignore_eos: bool = True) -> Stream:
    gen = parse_generation(
        {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": ignore_eos},
        chat=False,
        served_model="m",
        max_model_len=engine.setup.max_model_len,
    )
    req, offset = engine.make_request(gen)
    return engine.submit(req, offset)


async def _drain(stream: Stream) -> list[int]:
    """What a handler sees: the announced counts, until done."""
    seen = []
    while not stream.done:
        await stream.event.wait()
        stream.event.clear()
        seen.append(stream.announced)
    return seen


def test_streams_get_every_token_in_order_and_the_loop_tracks_the_time_scale() -> None:
    async def go() -> tuple[list[list[int]], float, float]:
        engine = _engine(time_scale=20)
        task = asyncio.create_task(engine.run())
        started = time.monotonic()
        streams = [_submit(engine, f"prompt {i} " + "w " * 200, 40) for i in range(4)]
        seen = await asyncio.gather(*(_drain(s) for s in streams))
        elapsed = time.monotonic() - started
        simulated = engine.scheduler.now
        task.cancel()
        return seen, elapsed, simulated

    seen, elapsed, simulated = asyncio.run(go())
    for counts in seen:
        assert counts == sorted(counts) and counts[-1] == 40
    # wall time follows simulated time / 20 (plus scheduling slack, never much less)
    assert simulated / 20 * 0.8 <= elapsed <= simulated / 20 + 0.5


def test_first_tokens_are_announced_on_their_own() -> None:
    async def go() -> list[int]:
        engine = _engine(time_scale=50)
        task = asyncio.create_task(engine.run())
        seen = await _drain(_submit(engine, "a b c", 30))
        task.cancel()
        return seen

    assert asyncio.run(go())[0] == 1


def test_eos_stops_early_and_says_stop() -> None:
    async def go() -> tuple[int, str]:
        engine = _engine(time_scale=1000)
        task = asyncio.create_task(engine.run())
        stream = _submit(engine, "what ends early", 5000, ignore_eos=False)
        await _drain(stream)
        task.cancel()
        return stream.req.num_output, stream.req.finish_reason

    count, reason = asyncio.run(go())
    assert count < 5000 and reason == "stop"


def test_zero_cost_announces_every_token() -> None:
    async def go() -> list[int]:
        engine = _engine(zero_cost=True)
        task = asyncio.create_task(engine.run())
        seen = await _drain(_submit(engine, "x", 25))
        task.cancel()
        return seen

    assert asyncio.run(go()) == list(range(1, 26))


def test_close_wakes_every_stream_and_abort_frees_blocks() -> None:
    async def go() -> tuple[bool, int, int]:
        engine = _engine(time_scale=1)
        task = asyncio.create_task(engine.run())
        stream = _submit(engine, "x " * 100, 3000)
        await asyncio.sleep(0.05)
        engine.close()
        await asyncio.wait_for(stream.event.wait(), 1)
        engine.abort(stream)
        await asyncio.sleep(0.01)
        task.cancel()
        kv = engine.scheduler.kv
        return stream.closed, kv.free_blocks, kv.num_blocks

    closed, free, total = asyncio.run(go())
    assert closed and free == total


def test_flush_interval_grows_with_open_streams() -> None:
    assert flush_interval(1) < flush_interval(256) <= 0.05
