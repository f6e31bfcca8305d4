"""``spec.slo``, ``spec.objectives``, ``spec.placement`` and ``spec.report``: what a good
configuration is, and where its results are shown."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from specs.metrics import ALL_METRICS, NATURAL_DIRECTION
from specs.model.base import MAX_NUMBER, StrictModel
from specs.suggest import did_you_mean


class SloBound(StrictModel):
    max: float = Field(
        gt=0,
        le=MAX_NUMBER,
        allow_inf_nan=False,
        description="Upper bound (milliseconds for latencies, a fraction for error_rate).",
    )
    hard: bool = Field(default=True, description="Hard: violating makes the configuration infeasible.")
    weight: float = Field(default=1.0, gt=0, le=1000, description="Soft SLOs: weight of the penalty.")


class Objective(StrictModel):
    metric: str
    direction: Literal["minimize", "maximize"] | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in ALL_METRICS:
            raise ValueError(f"unknown metric {v!r}{did_you_mean(v, ALL_METRICS)}")
        return v

    @property
    def resolved_direction(self) -> Literal["minimize", "maximize"]:
        return self.direction or NATURAL_DIRECTION[self.metric]


class Placement(StrictModel):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")


class ReportSpec(StrictModel):
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
