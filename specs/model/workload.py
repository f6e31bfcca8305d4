"""``spec.workload``: the requests (synthetic lengths or a dataset file) and the load levels
(fixed, or a capacity search)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from specs.durations import Duration
from specs.model.base import MAX_SEED, FiniteFloat, StrictModel


class LengthDist(StrictModel):
    """Token-length distribution of synthetic prompts or outputs."""

    mean: int = Field(ge=1, le=1_000_000)
    stddev: float = Field(default=0.0, ge=0, le=1_000_000, allow_inf_nan=False)
    distribution: Literal["fixed", "normal", "uniform"] | None = None
    min: int | None = Field(default=None, ge=1, le=1_000_000)
    max: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _bounds(self) -> LengthDist:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is above 'max' ({self.max})")
        if self.distribution == "fixed" and self.stddev:
            raise ValueError("a 'fixed' distribution has no stddev")
        return self

    @property
    def kind(self) -> str:
        return self.distribution or ("normal" if self.stddev > 0 else "fixed")


class SyntheticDataset(StrictModel):
    kind: Literal["synthetic"]
    input: LengthDist
    output: LengthDist
    shared_prefix: int = Field(
        default=0, ge=0, le=1_000_000, alias="sharedPrefix", description="Tokens shared by all prompts."
    )
    num_prompts: int = Field(default=1000, ge=1, le=1_000_000, alias="numPrompts")


class FileDataset(StrictModel):
    kind: Literal["jsonl", "csv", "sharegpt"]
    path: str | None = None
    url: str | None = None
    sha256: str | None = Field(default=None, description="Pin the content of a URL dataset.")
    prompt_field: str = Field(default="prompt", alias="promptField")
    output_field: str | None = Field(
        default=None, alias="outputField", description="Per-row max output tokens."
    )
    output: LengthDist | None = Field(default=None, description="Output lengths when rows do not give them.")
    sample: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Sample this many prompts (by workload.seed)."
    )
    dedup: bool = True

    @model_validator(mode="after")
    def _source(self) -> FileDataset:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' or 'url'")
        if self.url is not None and not self.url.startswith("https://"):
            raise ValueError("dataset 'url' must start with https://")
        if self.path is not None and "\x00" in self.path:
            raise ValueError("invalid path")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError("'sha256' must be 64 lowercase hex digits")
        return self


Dataset = Annotated[SyntheticDataset | FileDataset, Field(discriminator="kind")]


class CapacitySearch(StrictModel):
    """Find the highest load that still meets every hard SLO, by bisection."""

    by: Literal["concurrency", "rate"] = "concurrency"
    low: float = Field(default=1, gt=0, le=1_000_000, allow_inf_nan=False)
    high: float = Field(default=256, gt=0, le=1_000_000, allow_inf_nan=False)
    max_steps: int = Field(default=6, ge=1, le=20, alias="maxSteps")
    tolerance: float = Field(default=0.1, gt=0, lt=1, description="Stop when high/low - 1 is below this.")

    @model_validator(mode="after")
    def _range(self) -> CapacitySearch:
        if self.low >= self.high:
            raise ValueError("'low' must be below 'high'")
        return self


class LoadSpec(StrictModel):
    concurrency: list[int] | None = Field(default=None, max_length=1000)
    request_rate: list[FiniteFloat] | None = Field(default=None, alias="requestRate", max_length=1000)
    burstiness: float = Field(
        default=1.0, gt=0, le=1000, allow_inf_nan=False, description="Gamma shape of arrivals; 1 is Poisson."
    )
    capacity: CapacitySearch | None = None

    @model_validator(mode="after")
    def _one(self) -> LoadSpec:
        given = [n for n in ("concurrency", "request_rate", "capacity") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'concurrency', 'requestRate' or 'capacity'")
        for name in ("concurrency", "request_rate"):
            levels = getattr(self, name)
            if levels is not None:
                if not levels:
                    raise ValueError(f"'{name}' needs at least one level")
                if any(x <= 0 for x in levels):
                    raise ValueError("load levels must be > 0")
                if name == "request_rate" and max(levels) > 1_000_000:
                    raise ValueError("a request rate above 1000000/s is not supported")
                if len(set(levels)) != len(levels):
                    raise ValueError("load levels must be distinct")
        if self.concurrency is not None and max(self.concurrency) > 100_000:
            raise ValueError("concurrency above 100000 is not supported")
        return self


class WorkloadSpec(StrictModel):
    dataset: Dataset
    load: LoadSpec
    api: Literal["completions", "chat"] = "completions"
    requests_per_level: int = Field(default=200, ge=1, le=1_000_000, alias="requestsPerLevel")
    warmup_requests: int = Field(default=8, ge=0, le=100_000, alias="warmupRequests")
    request_timeout: Duration = Field(default=300.0, alias="requestTimeout")
    max_duration_per_level: Duration | None = Field(default=None, alias="maxDurationPerLevel")
    ignore_eos: bool = Field(default=True, alias="ignoreEos")
    repeats: int = Field(
        default=1,
        ge=1,
        le=20,
        description="Measure every load point this many times (fresh prompts each time); the record "
        "keeps the median and the min/median/max spread of every metric.",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Load generator processes per load point; default: from the free cores and the load.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="Seeds the synthetic prompts, file sampling and arrival times; apart from "
        "search.seed, so that re-seeding the sampler keeps the workload (and what was measured).",
    )
