"""When did a streamed chunk arrive? As early as user space can know it.

The naive receive time — ``perf_counter()`` when the request's coroutine resumes after
``readany()`` — includes every other callback the event loop ran first. At 256 streams a
batched engine sends one token to every stream at once; the chunks land together, and the last
coroutine to run would be stamped after the other 255 were parsed: several milliseconds of lag
that belong to the instrument, not the server.

So the load generator runs on its own event loop whose selector notes the time every
``select()`` returns. asyncio's loop iteration is: select, queue the ready sockets' read
callbacks, run the queue. A read callback feeds aiohttp's stream and schedules the waiting
coroutine for the *next* iteration. Hence a coroutine that resumes in iteration *j* and finds
data reads bytes that were delivered in iteration *j − 1* (or, rarely, earlier) — bytes that
were already in the kernel when iteration *j − 1*'s ``select()`` returned. That return time is
the receive stamp: never earlier than the data's arrival, and independent of how many other
streams are parsed before this one. What remains as lag is the wake-up latency plus the time
the loop was busy before it could call ``select()`` again, which is the instrument's real lag.

On any other loop (a caller's own ``asyncio.run``, uvloop) :func:`receive_clock` falls back to
``time.perf_counter`` at resume time, which is correct but later.
"""

from __future__ import annotations

import asyncio
import selectors
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_STAMPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StampingSelector] = (
    weakref.WeakKeyDictionary()
)


class StampingSelector(selectors.DefaultSelector):
    """The platform's default selector, remembering when its last two ``select()`` calls returned."""

    def __init__(self) -> None:
        super().__init__()
        now = time.perf_counter()
        self.previous = now
        self.current = now

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(timeout)
        self.previous = self.current
        self.current = time.perf_counter()
        return ready

    def received_at(self) -> float:
        """Receive time of data a coroutine reads now: the previous iteration's select return."""
        return self.previous


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A selector event loop whose receive times :func:`receive_clock` can read."""
    selector = StampingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    _STAMPERS[loop] = selector
    return loop


def receive_clock() -> Callable[[], float]:
    """The receive-time function for the running loop (see the module docstring)."""
    selector = _STAMPERS.get(asyncio.get_running_loop())
    return selector.received_at if selector is not None else time.perf_counter


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a stamping loop: the synchronous entry point of the load generator."""
    box: list[T] = []

    async def main() -> None:
        # the result is handed over outside the task: Python 3.11's Runner formats the main task
        # (and so its result, every request record) when it restores the SIGINT handler
        box.append(await coro)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
    return box[0]
