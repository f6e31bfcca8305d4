"""The parallel vocabulary (fields, defaults, what each means), the settings of one configuration
with where each value came from, and the shape of one engine's parallel support."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from backends.engines.base import BlockResult
from specs.errors import Rejection
from specs.model import PARALLEL_BOOL_FIELDS, PARALLEL_FIELDS

FIELDS: tuple[str, ...] = (*PARALLEL_FIELDS, *PARALLEL_BOOL_FIELDS)
DEFAULTS: dict[str, int | bool] = {**{f: 1 for f in PARALLEL_FIELDS}, "dp_attention": False}
DESCRIPTION = {
    "tp": "tensor parallelism",
    "pp": "pipeline parallelism",
    "dp": "data parallelism",
    "ep": "expert parallelism",
    "cp": "context parallelism",
    "dcp": "decode context parallelism",
    "moe_tp": "MoE tensor parallelism",
    "moe_ep": "MoE expert parallelism",
    "moe_dense_tp": "tensor parallelism of the dense MLP layers of MoE models",
    "dp_attention": "data-parallel attention",
}

Preset = Mapping[str, int | bool]


@dataclass(frozen=True)
class ParallelSettings:
    """The parallel fields of one configuration: only those given are in :attr:`values`."""

    values: Mapping[str, int | bool] = field(default_factory=dict)
    #: field → where it was set: ``parallel.<field>``, ``parallel.preset``, an engine-flag axis
    #: (``tensor-parallel-size``) or ``engine.args.<flag>``
    origin: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> int | bool:
        return self.values.get(name, DEFAULTS[name])

    def size(self, name: str) -> int:
        value = self.get(name)
        return int(value) if not isinstance(value, bool) else 1

    @property
    def tp(self) -> int:
        return self.size("tp")

    @property
    def pp(self) -> int:
        return self.size("pp")

    @property
    def dp(self) -> int:
        return self.size("dp")

    @property
    def ep(self) -> int:
        return self.size("ep")

    @property
    def cp(self) -> int:
        return self.size("cp")

    @property
    def dcp(self) -> int:
        return self.size("dcp")

    @property
    def dp_attention(self) -> bool:
        return bool(self.get("dp_attention"))

    def where(self, *names: str) -> tuple[str, ...]:
        """Origins of the given fields, for a :class:`Rejection`; unset fields are skipped."""
        return tuple(dict.fromkeys(self.origin[n] for n in names if n in self.origin))

    def is_set(self, name: str) -> bool:
        return name in self.values and self.values[name] != DEFAULTS[name]


class ParallelResult(BlockResult[ParallelSettings]):
    """The parallel block of one configuration on one engine."""


@dataclass(frozen=True)
class EngineParallel:
    """How one engine spells and limits parallelism."""

    title: str
    #: field → engine flag: emitted for the field, and read back when given as a raw flag
    flags: Mapping[str, str]
    #: field → LLM API key (TensorRT-LLM only)
    llm_api: Mapping[str, str]
    #: field → why the engine has no such setting
    unsupported: Mapping[str, str]
    presets: Mapping[str, Preset]
    rules: Callable[[ParallelSettings], list[Rejection]]
    gpus: Callable[[ParallelSettings], int]
    #: field → further engine flags that set it too (conflict checks only)
    also_set_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: fields that mean the same as another here (``moe_ep`` is ``ep``)
    same_as: Mapping[str, str] = field(default_factory=dict)


def lacks(title: str, name: str, hint: str = "") -> str:
    return f"{title} has no {DESCRIPTION[name]}: parallel.{name} must be 1{hint}"
