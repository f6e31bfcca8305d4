"""What the study and its executors say to each other: the executor runs one configuration and
answers a :class:`Measurement`; after each load level it asks the study's :data:`LevelGate`.

These types have their own module so that the executors (:mod:`reconciler.experiment`,
:mod:`reconciler.replay`) depend on the contract only, never on the study loop that drives them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from specs.records import FailureRecord, GpuRecord, LoadPointRecord
from specs.space import Config


@dataclass
class Measurement:
    """What running one configuration produced (the experiment runner's answer)."""

    state: str  # COMPLETE | FAILED
    load_points: list[LoadPointRecord] = field(default_factory=list)
    failure: FailureRecord | None = None
    command: list[str] = field(default_factory=list)
    engine_flags: dict[str, Any] = field(default_factory=dict)
    gpu: GpuRecord = field(default_factory=GpuRecord)
    timings: dict[str, float] = field(default_factory=dict)
    simulated: bool = False
    #: the container image that ran (container backends; the engine's official one by default)
    image: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: the run was interrupted (shutdown), nothing is known: do not record, re-queue
    interrupted: bool = False


@dataclass(frozen=True)
class GateVerdict:
    """What the level gate decided after a load level: ``stop`` the levels (the experiment stays
    COMPLETE with what it measured) or ``prune`` it (recorded PRUNED); ``reason`` is the evidence."""

    action: str  # stop | prune
    reason: str


#: (configuration, load points so far, load levels still to run) → a verdict or None to go on
LevelGate = Callable[[Config, list[LoadPointRecord], list[float]], GateVerdict | None]


class Executor(Protocol):
    """Runs one configuration end to end and never raises for engine problems."""

    def __call__(self, config: Config, *, baseline: bool, cancel: threading.Event) -> Measurement: ...


#: (event, details) for the CLI's and the daemon's progress lines
Progress = Callable[[str, dict[str, Any]], None]
