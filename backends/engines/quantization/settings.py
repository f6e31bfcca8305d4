"""The quantization vocabulary (presets, aliases), the settings of one configuration with where
each value came from, and the result an engine's mapper fills in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from backends.engines.base import BlockResult, FlagTable
from specs.errors import Rejection
from specs.model import QUANT_FIELDS, Scalar

#: the presets, in the engine-agnostic vocabulary; fields not named stay ``auto``
PRESETS: dict[str, dict[str, str]] = {
    "default": {},
    "kv-cache-fp8": {"kvcache_dtype": "fp8"},
    "dynamic-fp8": {"gemm_dtype": "fp8", "kvcache_dtype": "fp8", "moe_dtype": "fp8"},
    "bf16-stable": {"gemm_dtype": "bfloat16"},
    "aggressive-moe": {"kvcache_dtype": "fp8", "moe_dtype": "int8"},
}

#: other spellings users write, folded into the vocabulary above
ALIASES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "f32": "float32",
    "fp32": "float32",
    "float": "float32",
    "none": "auto",
    "default": "auto",
}

SHORT = {
    "gemm_dtype": "gemm",
    "kvcache_dtype": "KV cache",
    "attention_dtype": "attention",
    "moe_dtype": "MoE",
}


@dataclass(frozen=True)
class QuantSettings:
    values: Mapping[str, str] = field(default_factory=dict)
    origin: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        return self.values.get(name, "auto")

    def where(self, *names: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.origin[n] for n in names if n in self.origin))


@dataclass(frozen=True)
class QuantContext:
    """What a mapper may look at besides the settings."""

    engine: str
    table: FlagTable
    #: engine flags given directly: canonical name → (value, origin)
    raw: Mapping[str, tuple[Scalar, str]]
    variant: str | None = None


@dataclass
class QuantResult(BlockResult[QuantSettings]):
    """The quantization block of one configuration on one engine, built by its mapper."""

    #: what the engine does beyond what the fields say (shown with the launch plan)
    notes: list[str] = field(default_factory=list)

    def set(self, flag: str, value: Scalar, name: str, ctx: QuantContext) -> None:
        """Emit ``flag``, unless the spec already sets it directly (then it is given twice)."""
        if flag in ctx.raw:
            self.rejections.append(
                Rejection(
                    twice_message(ctx.table, flag, name), (ctx.raw[flag][1], *self.settings.where(name))
                )
            )
            return
        self.flags[flag] = value

    def reject(self, message: str, *names: str) -> None:
        self.rejections.append(Rejection(message, self.settings.where(*names)))

    def unsupported(self, title: str, name: str, supported: list[str], extra: str = "") -> None:
        value = self.settings.get(name)
        self.reject(
            f"{title} does not support {name} {value!r}{extra}: supported values are {', '.join(supported)}",
            name,
        )


def twice_message(table: FlagTable, flag: str, name: str) -> str:
    return (
        f"{table.spell(flag)} is set both as an engine flag and by quantization.{name}: give it in one place"
    )


def _norm(value: Scalar) -> str:
    text = str(value).strip()
    return ALIASES.get(text.lower(), text)


def settings_from(given: Mapping[str, Scalar]) -> tuple[QuantSettings, list[Rejection]]:
    """Preset first, then explicit fields on top (``{preset: kv-cache-fp8, gemm_dtype: fp8}``)."""
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    rejections: list[Rejection] = []
    preset = given.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            rejections.append(Rejection(f"unknown quantization preset {preset!r}", ("quant.preset",)))
        else:
            for name, value in PRESETS[str(preset)].items():
                values[name] = value
                origin[name] = "quant.preset"
    for name in QUANT_FIELDS:
        if name in given:
            values[name] = _norm(given[name])
            origin[name] = f"quant.{name}"
    return QuantSettings(values=values, origin=origin), rejections
