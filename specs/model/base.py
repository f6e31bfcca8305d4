"""What every section of the spec schema shares: the vocabulary (engine names, quantization and
parallel fields), the bounded value types (every number in a spec ends up in a flag, a sampler
or a timer, so none may be infinite or absurdly large) and :class:`StrictModel`, the base model that
refuses unknown fields.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from specs.metrics import SLO_METRICS
from specs.suggest import did_you_mean

API_VERSION = "autotuner/v1"
KIND = "TuningSpec"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ENGINES = ("vllm", "sglang", "trtllm", "llamacpp", "sim", "replay")
EngineName = Literal["vllm", "sglang", "trtllm", "llamacpp", "sim", "replay"]
Strategy = Literal["grid", "random", "tpe", "nsga2", "botorch"]

QUANT_FIELDS = ("gemm_dtype", "kvcache_dtype", "attention_dtype", "moe_dtype")
QUANT_PRESETS = ("default", "kv-cache-fp8", "dynamic-fp8", "bf16-stable", "aggressive-moe")
PARALLEL_FIELDS = ("tp", "pp", "dp", "ep", "cp", "dcp", "moe_tp", "moe_ep", "moe_dense_tp")
PARALLEL_BOOL_FIELDS = ("dp_attention",)

Scalar = str | int | float | bool

#: the largest magnitude of a number in a spec: every number ends up in an engine flag, a sampler,
#: a timer or a system call, and none of them means anything sensible beyond this (1e308 passes
#: YAML and float(), then overflows a timeout or a sampler deep inside a study)
MAX_NUMBER = 1e15
#: seeds feed numpy/Optuna samplers, which take 32-bit unsigned seeds
MAX_SEED = 2**32 - 1
MAX_STRING = 4096


def bounded(value: Any) -> Any:
    """A number that is finite and at most :data:`MAX_NUMBER` in size; a string without control
    characters (engine flags become argv elements: a NUL cannot be passed to exec at all)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        if abs(value) > MAX_NUMBER:
            raise ValueError(
                f"{value:g} is out of range: numbers in a spec are at most {MAX_NUMBER:g} in size"
            )
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"a value here is at most {MAX_STRING} characters")
        if any(not c.isprintable() for c in value):
            raise ValueError("control characters are not allowed in a value")
    return value


BoundedScalar = Annotated[Scalar, AfterValidator(bounded)]
Number = Annotated[int | float, AfterValidator(bounded)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False), AfterValidator(bounded)]


def _slo_key(key: str) -> str:
    if key not in SLO_METRICS:
        raise ValueError(f"unknown SLO metric {key!r}{did_you_mean(key, SLO_METRICS)}")
    return key


def _flag_name(name: str) -> str:
    if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
        raise ValueError(f"{name!r} is not an engine flag name: write it without dashes, e.g. max-num-seqs")
    return name


SloKey = Annotated[str, AfterValidator(_slo_key)]
FlagName = Annotated[str, AfterValidator(_flag_name)]


class StrictModel(BaseModel):
    """Base of every spec model: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_alias=True, validate_by_name=False)


def dns_label(value: str, what: str) -> str:
    if not DNS1123_LABEL.match(value) or len(value) > 63:
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label: 1-63 characters of lowercase letters, digits "
            "and '-', starting and ending with a letter or digit (it names a folder under results/)"
        )
    return value
