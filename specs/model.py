"""The TuningSpec schema (``apiVersion: autotuner/v1``, ``kind: TuningSpec``).

Pydantic models at the edge (YAML in), plain data inside. Every model forbids unknown fields; the
loader turns those errors into "did you mean" hints. camelCase keys follow Kubernetes style; the
engine-agnostic ``quantization``/``parallel`` blocks and SLO metric names keep their snake_case
vocabulary because that is how users already know them.

Cross-engine rules (which flags exist, which dtypes an engine accepts, parallel combinations) are
not here: they need the engines' flag tables and live in ``backends.engines``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from core.redact import SECRET_HINT
from specs.durations import Duration
from specs.metrics import ALL_METRICS, NATURAL_DIRECTION, SLO_METRICS
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


def _bounded(value: Any) -> Any:
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


BoundedScalar = Annotated[Scalar, AfterValidator(_bounded)]
Number = Annotated[int | float, AfterValidator(_bounded)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False), AfterValidator(_bounded)]


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


class _Strict(BaseModel):
    """Base of every spec model: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_alias=True, validate_by_name=False)


def _dns_label(value: str, what: str) -> str:
    if not DNS1123_LABEL.match(value) or len(value) > 63:
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label: 1-63 characters of lowercase letters, digits "
            "and '-', starting and ending with a letter or digit (it names a folder under results/)"
        )
    return value


# --------------------------------------------------------------------------------------------- metadata


class Metadata(_Strict):
    name: str = Field(description="DNS-1123 label; names results/<name>/ and the site page.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _dns_label(v, "name")


# --------------------------------------------------------------------------------------------- model / engine


class ModelRef(_Strict):
    id: str = Field(min_length=1, description="Hugging Face model id, local path, or sim catalog name.")
    revision: str = "main"
    tokenizer: str | None = None
    served_name: str | None = Field(default=None, alias="servedName")

    @field_validator("id", "revision", "tokenizer", "served_name")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() or not c.isprintable() for c in v)):
            raise ValueError("must be non-empty with no spaces or control characters")
        return v


class EnvFrom(_Strict):
    from_env: str = Field(alias="fromEnv", description="Name of a variable in the daemon's environment.")

    @field_validator("from_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not ENV_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid environment variable name")
        return v


class EngineSpec(_Strict):
    name: EngineName
    version: str | None = Field(default=None, description="Recorded in results; default image tag.")
    image: str | None = Field(default=None, description="Container image (docker and kubernetes backends).")
    variant: Literal["python", "native"] | None = Field(
        default=None, description="llamacpp only: llama-cpp-python server (python) or llama-server (native)."
    )
    args: dict[FlagName, BoundedScalar] = Field(default_factory=dict, description="Fixed engine flags.")
    env: dict[str, str | EnvFrom] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str | EnvFrom]) -> dict[str, str | EnvFrom]:
        for key, value in v.items():
            if not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if isinstance(value, str):
                _bounded(value)
            if isinstance(value, str) and SECRET_HINT.search(key):
                raise ValueError(
                    f"{key} looks like a secret: give it by reference, {{{key}: {{fromEnv: {key}}}}}, "
                    "so it never lands in the repository or the results"
                )
        return v

    @model_validator(mode="after")
    def _variant(self) -> EngineSpec:
        if self.variant is not None and self.name != "llamacpp":
            raise ValueError("'variant' applies to the llamacpp engine only")
        return self


# --------------------------------------------------------------------------------------------- backend

Gpus = Literal["auto"] | StrictInt | list[StrictInt]


class _BackendBase(_Strict):
    gpus: Gpus = Field(default="auto", description="'auto', a count, or a list of device ids.")
    startup_timeout: Duration = Field(default=900.0, alias="startupTimeout")

    @field_validator("gpus")
    @classmethod
    def _gpus_bounds(cls, v: Gpus) -> Gpus:
        if isinstance(v, int) and not isinstance(v, bool) and v > 1024:
            raise ValueError("gpus is at most 1024")
        if isinstance(v, list) and (len(v) > 1024 or any(i > 4095 for i in v)):
            raise ValueError("at most 1024 gpu ids, each below 4096")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: Gpus) -> Gpus:
        if isinstance(v, bool):
            raise ValueError("gpus must be 'auto', a count or a list of ids")
        if isinstance(v, int) and v < 0:
            raise ValueError("gpus cannot be negative")
        if isinstance(v, list) and (len(set(v)) != len(v) or any(i < 0 for i in v)):
            raise ValueError("gpu ids must be distinct and >= 0")
        return v


class LocalBackend(_BackendBase):
    kind: Literal["local"]


_SIZE = re.compile(r"^[1-9][0-9]*[bkmg]?$", re.I)
_VOLUME = re.compile(r"^(/[^:]*):(/[^:]*)(:(ro|rw))?$")


def _size(value: str | None, what: str) -> str | None:
    if value is not None and not _SIZE.match(value):
        raise ValueError(f"{what} {value!r} must be a size like 16g, 512m or 1073741824 (b, k, m, g)")
    return value


class DockerBackend(_BackendBase):
    """The engine in a container of the engine's image (see docs/backends.md, Docker)."""

    kind: Literal["docker"]
    shm_size: str = Field(
        default="16g", alias="shmSize", description="/dev/shm size; not used with ipc: host."
    )
    ipc: Literal["private", "shareable", "host"] = Field(
        default="private",
        description="IPC namespace; host shares the host's /dev/shm (vLLM's own docs suggest it for "
        "tensor parallel) instead of a private one of shmSize.",
    )
    network: Literal["host", "bridge"] = Field(
        default="bridge",
        description="bridge: the engine's port published on 127.0.0.1 only; host: the host's network.",
    )
    memory: str | None = Field(
        default=None,
        description="Memory limit of the container (host RAM, not GPU memory), e.g. 64g; over it the "
        "engine is killed and the experiment fails as oom.",
    )
    volumes: list[str] = Field(
        default_factory=list,
        description="Extra host:container[:ro|:rw] bind mounts; each host path must lie under a root "
        "the operator policy allows (volumeRoots), else the study stalls.",
    )

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str) -> str:
        _size(v, "shmSize")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        return _size(v, "memory")

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[str]) -> list[str]:
        for item in v:
            m = _VOLUME.match(item)
            if not m or ".." in item.split("/"):
                raise ValueError(
                    f"volume {item!r} must be HOST:CONTAINER or HOST:CONTAINER:ro with absolute paths "
                    "and no '..'"
                )
        return v


class Toleration(_Strict):
    """A pod toleration, as Kubernetes spells it."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: StrictInt | None = Field(default=None, alias="tolerationSeconds")


class KubeResources(_Strict):
    """CPU and memory (and any other non-GPU resource) of the engine container; the GPU
    request comes from the parallel settings and ``gpuResource``."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class KubernetesBackend(_BackendBase):
    kind: Literal["kubernetes"]
    namespace: str = "default"
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = Field(default=None, description="A pod affinity block, as is.")
    runtime_class_name: str | None = Field(default=None, alias="runtimeClassName")
    image_pull_secrets: list[str] = Field(default_factory=list, alias="imagePullSecrets")
    gpu_resource: str = Field(default="nvidia.com/gpu", alias="gpuResource")
    service_account: str | None = Field(default=None, alias="serviceAccount")
    model_cache_pvc: str | None = Field(default=None, alias="modelCachePvc")
    model_cache_host_path: str | None = Field(
        default=None,
        alias="modelCacheHostPath",
        description="A node directory as the model cache; the daemon must allow it (see docs/backends.md).",
    )
    model_cache_path: str = Field(default="/root/.cache/huggingface", alias="modelCachePath")
    resources: KubeResources = Field(default_factory=KubeResources)
    shm_size: str = Field(default="16Gi", alias="shmSize")
    access: Literal["auto", "service", "portForward", "podIP"] = Field(
        default="auto",
        description="How the daemon reaches the engine: the Service's DNS name (in the cluster), the API "
        "server's port-forward (outside), or the pod IP; auto picks by where the daemon runs.",
    )
    scheduling_timeout: Duration = Field(default=300.0, alias="schedulingTimeout")

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return _dns_label(v, "namespace")

    @field_validator("service_account", "model_cache_pvc", "runtime_class_name")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else _dns_label(v, "name")

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, v: list[str]) -> list[str]:
        return [_dns_label(s, "image pull secret") for s in v]

    @field_validator("model_cache_host_path", "model_cache_path")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"{v!r} must be an absolute path without '..'")
        return v

    @field_validator("gpu_resource")
    @classmethod
    def _resource(cls, v: str) -> str:
        if not re.match(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", v):
            raise ValueError(f"{v!r} is not a Kubernetes resource name, e.g. nvidia.com/gpu")
        return v

    @model_validator(mode="after")
    def _one_cache(self) -> KubernetesBackend:
        if self.model_cache_pvc and self.model_cache_host_path:
            raise ValueError("give modelCachePvc or modelCacheHostPath, not both")
        return self


Backend = Annotated[LocalBackend | DockerBackend | KubernetesBackend, Field(discriminator="kind")]


# --------------------------------------------------------------------------------------------- search


class ParamSpec(_Strict):
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


class QuantizationSpec(_Strict):
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


class ParallelSpec(_Strict):
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


class SearchSpec(_Strict):
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


# --------------------------------------------------------------------------------------------- workload


class LengthDist(_Strict):
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


class SyntheticDataset(_Strict):
    kind: Literal["synthetic"]
    input: LengthDist
    output: LengthDist
    shared_prefix: int = Field(
        default=0, ge=0, le=1_000_000, alias="sharedPrefix", description="Tokens shared by all prompts."
    )
    num_prompts: int = Field(default=1000, ge=1, le=1_000_000, alias="numPrompts")


class FileDataset(_Strict):
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


class CapacitySearch(_Strict):
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


class LoadSpec(_Strict):
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


class WorkloadSpec(_Strict):
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


# ------------------------------------------------------------------------------------ SLO, objectives


class SloBound(_Strict):
    max: float = Field(
        gt=0,
        le=MAX_NUMBER,
        allow_inf_nan=False,
        description="Upper bound (milliseconds for latencies, a fraction for error_rate).",
    )
    hard: bool = Field(default=True, description="Hard: violating makes the configuration infeasible.")
    weight: float = Field(default=1.0, gt=0, le=1000, description="Soft SLOs: weight of the penalty.")


class Objective(_Strict):
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


class Placement(_Strict):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")


class ReportSpec(_Strict):
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=5000)


# --------------------------------------------------------------------------------------------- the spec


class SpecBody(_Strict):
    suspend: bool = False
    placement: Placement | None = None
    model: ModelRef
    engine: EngineSpec
    backend: Backend = Field(default_factory=lambda: LocalBackend(kind="local"))
    search: SearchSpec = Field(default_factory=SearchSpec)
    workload: WorkloadSpec
    slo: dict[SloKey, SloBound] = Field(default_factory=dict)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="output_throughput_per_gpu", direction="maximize")],
        min_length=1,
        max_length=3,
    )
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("slo")
    @classmethod
    def _slo_keys(cls, v: dict[str, SloBound]) -> dict[str, SloBound]:
        for key, bound in v.items():
            if key == "error_rate" and bound.max > 1:
                raise ValueError("error_rate is a fraction: its max must be at most 1")
        return v

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, v: list[Objective]) -> list[Objective]:
        metrics = [o.metric for o in v]
        if len(set(metrics)) != len(metrics):
            raise ValueError("each objective metric may appear once")
        return v


class TuningSpec(_Strict):
    """The root of a spec file."""

    api_version: Literal["autotuner/v1"] = Field(alias="apiVersion")
    kind: Literal["TuningSpec"]
    metadata: Metadata
    spec: SpecBody

    @property
    def name(self) -> str:
        return self.metadata.name

    def normalized(self) -> dict[str, Any]:
        """The spec with defaults filled in, in a stable JSON-able form."""
        return self.model_dump(mode="json", by_alias=True)

    def generation(self) -> str:
        """Hash of what defines the study. ``suspend``, ``placement``, ``report`` and metadata
        labels do not start a new study, so they are left out."""
        data = self.normalized()
        body = dict(data["spec"])
        for key in ("suspend", "placement", "report"):
            body.pop(key, None)
        canonical = json.dumps({"name": data["metadata"]["name"], "spec": body}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
