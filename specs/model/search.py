"""``spec.search``: the space (free parameters, the engine-agnostic quantization and parallel
blocks, constraints), the strategy and the budget."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator, model_validator

from specs.durations import Duration
from specs.model.base import (
    MAX_SEED,
    PARALLEL_BOOL_FIELDS,
    PARALLEL_FIELDS,
    QUANT_FIELDS,
    QUANT_PRESETS,
    BoundedScalar,
    FlagName,
    Number,
    Scalar,
    Strategy,
    StrictModel,
)
from specs.suggest import did_you_mean


class ParamSpec(StrictModel):
    """A searched engine flag: either ``values: [...]`` or a ``low``/``high`` range."""

    values: list[BoundedScalar] | None = Field(default=None, max_length=10_000)
    low: Number | None = None
    high: Number | None = None
    log: bool = False
    step: Number | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        ranged = self.low is not None or self.high is not None
        if self.values is not None:
            if ranged or self.step is not None or self.log:
                raise ValueError(
                    "give either 'values' or 'low'/'high' (with optional 'log', 'step'), not both"
                )
            if not self.values:
                raise ValueError("'values' is empty: the search space would be empty")
            if len({json.dumps(v) for v in self.values}) != len(self.values):
                raise ValueError("'values' has duplicates")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a parameter needs 'values: [...]' or both 'low' and 'high'")
        if isinstance(self.low, bool) or isinstance(self.high, bool):
            raise ValueError("'low' and 'high' must be numbers")
        if self.low >= self.high:
            raise ValueError(
                f"'low' ({self.low}) must be below 'high' ({self.high}); for one value use values: [x]"
            )
        if self.log and self.low <= 0:
            raise ValueError("'log: true' needs 'low' > 0")
        if self.step is not None and self.step <= 0:
            raise ValueError("'step' must be > 0")
        if self.step is not None and self.step > self.high - self.low:
            raise ValueError("'step' is larger than the range")
        return self

    @property
    def is_int(self) -> bool:
        return self.values is None and all(
            isinstance(x, int) and not isinstance(x, bool) for x in (self.low, self.high, self.step or 1)
        )

    def grid(self) -> list[Scalar] | None:
        """The finite list of values, or ``None`` for a continuous range."""
        if self.values is not None:
            return list(self.values)
        assert self.low is not None and self.high is not None
        if self.is_int:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is not None:
            n = int((self.high - self.low) / self.step + 1e-9) + 1
            return [round(self.low + i * self.step, 10) for i in range(n)]
        return None


def _one_or_many(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


class QuantizationSpec(StrictModel):
    """Engine-agnostic quantization; each field a value or a list to search over."""

    preset: str | list[str] | None = Field(default=None, description=f"One of {', '.join(QUANT_PRESETS)}.")
    gemm_dtype: str | list[str] | None = None
    kvcache_dtype: str | list[str] | None = None
    attention_dtype: str | list[str] | None = None
    moe_dtype: str | list[str] | None = None

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | list[str] | None) -> str | list[str] | None:
        for p in _one_or_many(v) if v is not None else []:
            if p not in QUANT_PRESETS:
                raise ValueError(f"unknown quantization preset {p!r}{did_you_mean(p, QUANT_PRESETS)}")
        return v

    @field_validator("preset", "gemm_dtype", "kvcache_dtype", "attention_dtype", "moe_dtype")
    @classmethod
    def _nonempty(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a list here must be non-empty without duplicates")
        return v

    def axes(self) -> dict[str, list[str]]:
        """Searched axes, each a list of values (presets expand later, per engine)."""
        out: dict[str, list[str]] = {}
        if self.preset is not None:
            out["preset"] = _one_or_many(self.preset)
        for f in QUANT_FIELDS:
            v = getattr(self, f)
            if v is not None:
                out[f] = _one_or_many(v)
        return out


class ParallelSpec(StrictModel):
    """Engine-agnostic parallelism; each field a value or a list to search over."""

    preset: str | list[str] | None = Field(default=None, description="A named preset of the chosen engine.")
    tp: int | list[int] | None = None
    pp: int | list[int] | None = None
    dp: int | list[int] | None = None
    ep: int | list[int] | None = None
    cp: int | list[int] | None = None
    dcp: int | list[int] | None = None
    moe_tp: int | list[int] | None = None
    moe_ep: int | list[int] | None = None
    moe_dense_tp: int | list[int] | None = None
    dp_attention: bool | list[bool] | None = None

    @field_validator(*PARALLEL_FIELDS)
    @classmethod
    def _sizes(cls, v: int | list[int] | None) -> int | list[int] | None:
        if v is None:
            return v
        values = _one_or_many(v)
        if not values or len(set(values)) != len(values):
            raise ValueError("a list here must be non-empty without duplicates")
        for x in values:
            if isinstance(x, bool) or x < 1 or x > 1024:
                raise ValueError(f"parallel sizes are whole numbers from 1 to 1024, got {x!r}")
        return v

    @field_validator("preset")
    @classmethod
    def _preset_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a list here must be non-empty without duplicates")
        return v

    def axes(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        if self.preset is not None:
            out["preset"] = _one_or_many(self.preset)
        for f in (*PARALLEL_FIELDS, *PARALLEL_BOOL_FIELDS):
            v = getattr(self, f)
            if v is not None:
                out[f] = _one_or_many(v)
        return out


class SearchSpec(StrictModel):
    strategy: Strategy = "tpe"
    max_experiments: int = Field(default=20, ge=1, le=10000, alias="maxExperiments")
    max_failed_experiments: int | None = Field(default=None, ge=1, le=10000, alias="maxFailedExperiments")
    parallelism: int = Field(default=1, ge=1, le=64)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="0 to 2^32-1 (samplers take 32-bit seeds).")
    include_default: bool = Field(
        default=True,
        alias="includeDefault",
        description="Measure the engine's default configuration first, as the baseline of the report.",
    )
    confirm_top: int = Field(
        default=0,
        ge=0,
        le=10,
        alias="confirmTop",
        description="Re-measure the best this-many configurations once more at the end (outside "
        "maxExperiments), so that the winner and its spread are confirmed; 2 is a good choice on "
        "real GPUs, where measurements vary.",
    )
    pruning: bool = Field(
        default=True,
        description="Stop a configuration's load levels once it misses a hard SLO, and record as "
        "PRUNED one whose optimistic bound is already below the best so far. false: every "
        "configuration runs every load level (whole load curves, more time).",
    )
    experiment_timeout: Duration = Field(default=3600.0, alias="experimentTimeout")
    parameters: dict[FlagName, ParamSpec] = Field(default_factory=dict)
    quantization: QuantizationSpec | None = None
    parallel: ParallelSpec | None = None
    constraints: list[str] = Field(default_factory=list)

    def axis_names(self) -> list[str]:
        names = list(self.parameters)
        if self.quantization:
            names += [f"quant.{k}" for k in self.quantization.axes()]
        if self.parallel:
            names += [f"parallel.{k}" for k in self.parallel.axes()]
        return names
