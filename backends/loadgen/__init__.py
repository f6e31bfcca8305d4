"""The built-in load generator: streams requests at an OpenAI-compatible server and turns what it
saw into the metric vocabulary of docs/architecture.md section 5.

Layers, each testable alone: :mod:`.stream` (one request, the hot path), :mod:`.phase` (closed
and open loop on one event loop), :mod:`.runner` (one level: bodies, schedule, warm-up, workers),
:mod:`.workers` (a level over several processes), :mod:`.options` (:class:`LoadOptions`, the options
shared by every level), :mod:`.aggregate` (pure formulas on :class:`RequestRecord`s),
:mod:`.capacity` (bisection for the highest level within SLO), :mod:`.clock` (receive stamps
taken when the event loop's ``select()`` returns). asyncio and aiohttp only, no numpy.

Asynchronous callers ``await run_load_point(...)``; everyone else calls
``run_sync(run_load_point(...))``, which also gives the earliest receive stamps.
"""

from backends.loadgen.aggregate import aggregate, is_good, request_latencies
from backends.loadgen.capacity import CapacityResult, bisect, find_capacity, level_verdict
from backends.loadgen.clock import run as run_sync
from backends.loadgen.options import LoadOptions
from backends.loadgen.records import ERROR_KINDS, RequestRecord
from backends.loadgen.runner import LoadPointRun, collect, run_load_point, summarize_run
from backends.loadgen.schedule import arrival_offsets
from backends.loadgen.stats import percentile, summarize
from backends.loadgen.target import PromptLike, TargetConfig, fetch_model, normalize_base_url

__all__ = [
    "ERROR_KINDS",
    "CapacityResult",
    "LoadOptions",
    "LoadPointRun",
    "PromptLike",
    "RequestRecord",
    "TargetConfig",
    "aggregate",
    "arrival_offsets",
    "bisect",
    "collect",
    "fetch_model",
    "find_capacity",
    "is_good",
    "level_verdict",
    "normalize_base_url",
    "percentile",
    "request_latencies",
    "run_load_point",
    "run_sync",
    "summarize",
    "summarize_run",
]
