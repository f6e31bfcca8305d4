"""How load points are driven, apart from the level itself: one :class:`LoadOptions`.

A benchmark measures several levels (a list of concurrencies or rates, or a capacity search)
with the same options: the request timeout, the warm-up, the seed of the open-loop schedule, the
number of worker processes, the engine's time scale, and what the metrics are judged against
(GPU count, SLOs). The caller builds them once and hands them down: :func:`.runner.collect`,
:func:`.runner.run_load_point` and :func:`.capacity.find_capacity` take the same object instead of
relaying a dozen keyword arguments from layer to layer. What differs between levels, the level
itself and a per-level progress callback, stays an argument of the call; a caller that changes an
option per level (the experiment runner's share of the time budget) uses
:func:`dataclasses.replace`.

The checks that do not depend on the level run when the options are built, so an impossible
option fails before any server is contacted (ValueError, a bug of the caller: user input is
checked by the CLI and the spec first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from specs.model import SloBound


@dataclass(frozen=True)
class LoadOptions:
    """Options shared by every level of a benchmark (see the module docstring)."""

    #: open loop: gamma shape of the inter-arrival times (1 = Poisson, below 1 burstier)
    burstiness: float = 1.0
    #: requests sent before the measured phase, at the level's concurrency, never counted
    warmup: int = 0
    #: seed of the open-loop arrival schedule
    seed: int = 0
    #: per-request timeout, seconds
    timeout_s: float = 300.0
    #: stop sending at this many seconds and cancel what is in flight (None: no deadline)
    max_duration_s: float | None = None
    #: engine seconds per wall second (the sim's ``time-scale``; see :mod:`.aggregate`)
    time_scale: float = 1.0
    #: load generator processes; None picks them from the free cores (:mod:`.workers`)
    workers: int | None = 1
    #: GPUs behind the endpoint, for the per-GPU metrics
    gpus: int = 1
    #: the SLOs that goodput, attainment and capacity verdicts are judged against
    slo: Mapping[str, SloBound] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if not self.time_scale > 0 or not math.isfinite(self.time_scale):
            raise ValueError(f"time_scale must be > 0, got {self.time_scale!r}")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness must be > 0, got {self.burstiness!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")


DEFAULT_OPTIONS = LoadOptions()
