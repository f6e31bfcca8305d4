"""The scheduler paced against the wall clock, and the hand-off of tokens to HTTP streams.

One asyncio task owns the :class:`~backends.sim.scheduler.Scheduler`. It simulates a little
ahead (:data:`LOOKAHEAD_S` of wall time, at least one step), sleeps until the wall-clock moment
the last of those steps ends (``simulated seconds / time_scale`` after an anchor), and repeats.
Requests that arrive while it sleeps join the next step, as they would in a real engine.
Handlers never read the scheduler's live state, because the loop is usually a little ahead of
what is due: the loop *announces* to each stream how many tokens it may send, and wakes it.

**Batching the emission.** Streams are announced in bulk at most every :func:`flush_interval`
— a couple of milliseconds, growing with the number of open streams — so at a large time scale
a chunk carries several tokens (as with vLLM's ``--stream-interval``) instead of the event loop
drowning in writes: CPU per second is bounded by streams × flushes, not by the simulated token
rate. At time scale 1 a decode step is usually longer than the interval, and every token is its
own chunk. A request that gets its first token or finishes is announced at once, on its own, so
TTFT and end-to-end latency come out at their exact moments; only inter-token gaps coarsen.

**Falling behind.** When the host is too slow to keep up (steps are due before the previous
sleep ended), the loop re-anchors instead of racing to catch up, so the simulated timeline
stretches rather than compresses; timing jitter of this kind is the only non-determinism.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from backends.sim.api import GenerationRequest
from backends.sim.build import EngineSetup
from backends.sim.offline import new_scheduler
from backends.sim.request import SimRequest, Status
from backends.sim.text import block_hashes, eos_position, text_offset

#: how far (wall time) the loop simulates ahead before it sleeps; a request that arrives
#: meanwhile joins the first step after that, as it would join the next step of a real engine
LOOKAHEAD_S = 0.002
#: shortest wall time between two flushes of every stream
MIN_FLUSH_S = 0.002
#: per open stream: a flush costs about this much CPU per stream, keep flushes sparse enough
PER_STREAM_FLUSH_S = 0.0001
#: lag behind the timeline beyond which the loop re-anchors (see module doc)
MAX_LAG_S = 0.05
#: decode steps one scheduler call may fold
MAX_FOLDED_STEPS = 1 << 20


def flush_interval(open_streams: int) -> float:
    return max(MIN_FLUSH_S, PER_STREAM_FLUSH_S * open_streams)


class Stream:
    """One request's link from the engine loop to its HTTP handler."""

    __slots__ = ("announced", "closed", "done", "event", "offset", "req")

    def __init__(self, req: SimRequest, offset: int) -> None:
        self.req = req
        #: output text cycle offset (see :mod:`backends.sim.text`)
        self.offset = offset
        self.event = asyncio.Event()
        #: tokens the handler may send (due by the wall clock)
        self.announced = 0
        #: the request finished and :attr:`announced` is final
        self.done = False
        #: the engine shut down: stop without finishing the response
        self.closed = False


class AsyncEngine:
    def __init__(self, setup: EngineSetup, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.setup = setup
        self.scheduler = new_scheduler(setup)
        self.time_scale = setup.config.time_scale
        self.zero_cost = setup.config.zero_cost
        self._clock = clock
        self._streams: dict[SimRequest, Stream] = {}
        self._wake = asyncio.Event()
        self._anchor_wall = clock()
        self._anchor_sim = 0.0
        self._next_id = 0

    # -- time ----------------------------------------------------------------------------------

    def _wall_of(self, sim: float) -> float:
        return self._anchor_wall + (sim - self._anchor_sim) / self.time_scale

    def _sim_of(self, wall: float) -> float:
        return self._anchor_sim + (wall - self._anchor_wall) * self.time_scale

    def _anchor(self, wall: float) -> None:
        self._anchor_wall = wall
        self._anchor_sim = self.scheduler.now

    async def _sleep_until_due(self) -> None:
        """Sleep until the wall-clock moment of the scheduler's clock (always yields once)."""
        delay = self._wall_of(self.scheduler.now) - self._clock()
        await asyncio.sleep(delay if delay > 0 else 0)

    # -- requests ------------------------------------------------------------------------------

    def make_request(self, gen: GenerationRequest) -> tuple[SimRequest, int]:
        """The scheduler's view of a parsed request, and its output text offset."""
        config = self.setup.config
        self._next_id += 1
        if gen.ignore_eos:
            target, reason = gen.max_tokens, "length"
        else:
            eos = max(eos_position(config.seed, gen.content_key), gen.min_tokens)
            target, reason = (eos, "stop") if eos <= gen.max_tokens else (gen.max_tokens, "length")
        hashes = block_hashes(gen.tokens, config.block_size) if config.enable_prefix_caching else ()
        req = SimRequest(f"{self._next_id}", gen.prompt_tokens, target, reason, hashes)
        return req, text_offset(gen.content_key)

    def submit(self, req: SimRequest, offset: int = 0) -> Stream:
        stream = Stream(req, offset)
        self.scheduler.add(req)
        self._streams[req] = stream
        self._wake.set()
        return stream

    def abort(self, stream: Stream) -> None:
        """The client is gone or the handler failed: free the request's KV (no-op when finished)."""
        self.scheduler.abort(stream.req)

    def close(self) -> None:
        """Shutting down: wake every handler so that it ends its response now."""
        for stream in self._streams.values():
            stream.closed = True
            stream.event.set()
        self._streams = {}

    def reset_prefix_cache(self) -> int:
        return self.scheduler.kv.reset_prefix_cache()

    # -- the loop ------------------------------------------------------------------------------

    @staticmethod
    def _announce(stream: Stream) -> None:
        req = stream.req
        if req.num_output != stream.announced or req.done:
            stream.announced = req.num_output
            if req.done:
                stream.done = True
            stream.event.set()

    def _flush(self) -> None:
        """Announce every stream's due tokens; forget the streams that ended."""
        ended = []
        for req, stream in self._streams.items():
            self._announce(stream)
            if req.done:
                ended.append(req)
        for req in ended:
            del self._streams[req]

    def _flush_events(self, reqs: list[SimRequest]) -> None:
        """Announce only the streams whose request started or finished (an early, cheap flush)."""
        for req in reqs:
            stream = self._streams.get(req)
            if stream is not None:
                self._announce(stream)

    async def run(self) -> None:
        """Serve forever (cancel the task to stop)."""
        sched = self.scheduler
        clock = self._clock
        last_flush = clock()
        while True:
            if not sched.has_work():
                self._flush()  # announce aborted requests' ends
                self._wake.clear()
                await self._wake.wait()
                self._anchor(clock())
                continue
            if self.zero_cost:
                sched.step()
                self._flush()
                await asyncio.sleep(0)
                continue
            now = clock()
            if now - self._wall_of(sched.now) > MAX_LAG_S:
                self._anchor(now)
            horizon = self._sim_of(now + LOOKAHEAD_S)
            while sched.now < horizon and sched.has_work():
                result = sched.step(MAX_FOLDED_STEPS, horizon - sched.now, stop_on_events=True)
                if not result.steps:
                    break
                if result.has_events:
                    await self._sleep_until_due()
                    self._flush_events(result.started + result.finished)
            await self._sleep_until_due()
            if clock() - last_flush >= flush_interval(len(self._streams)) or not sched.has_work():
                self._flush()
                last_flush = clock()

    def metrics(self) -> dict[str, float]:
        sched = self.scheduler
        kv = sched.kv
        return {
            "num_requests_running": len(sched.running),
            "num_requests_waiting": len(sched.waiting),
            "kv_cache_usage_perc": kv.usage,
            "num_preemptions_total": sched.total_preemptions,
            "prompt_tokens_total": sched.prompt_tokens_total,
            "generation_tokens_total": sched.generation_tokens_total,
            "request_success_total": sched.finished_total,
            "prefix_cache_queries_total": kv.queried_tokens,
            "prefix_cache_hits_total": kv.hit_tokens,
            "time_to_first_token_seconds_sum": sched.ttft_sum,
            "time_to_first_token_seconds_count": sched.started_total,
            "e2e_request_latency_seconds_sum": sched.e2e_sum,
            "e2e_request_latency_seconds_count": sched.finished_total,
            "open_streams": len(self._streams),
            "simulated_seconds": sched.now,
            "steps_total": sched.total_steps,
        }


def is_finished(req: SimRequest) -> bool:
    return req.status is Status.FINISHED
