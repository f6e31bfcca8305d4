"""One configuration's parallel settings on one engine: preset, then explicit fields, then raw
engine flags, each step recording where a value came from; and the GPUs it needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from backends.engines.parallel.engines import ENGINES
from backends.engines.parallel.settings import (
    DEFAULTS,
    DESCRIPTION,
    FIELDS,
    EngineParallel,
    ParallelResult,
    ParallelSettings,
    Preset,
)
from specs.errors import Rejection
from specs.model import Scalar
from specs.suggest import did_you_mean


def presets(engine: str) -> Mapping[str, Preset]:
    return ENGINES[engine].presets


def owned_flags(engine: str) -> dict[str, tuple[str, ...]]:
    """field → engine flags that also set it (for "given twice" checks)."""
    spec = ENGINES[engine]
    out: dict[str, tuple[str, ...]] = {}
    for name in FIELDS:
        flags = ((spec.flags[name],) if name in spec.flags else ()) + tuple(spec.also_set_by.get(name, ()))
        if flags:
            out[name] = flags
    for alias, target in spec.same_as.items():
        if target in out:
            out[alias] = out[target]
    return out


def twice_message(flag: str, name: str) -> str:
    return f"--{flag} and parallel.{name} both set the {DESCRIPTION[name]}: give it in one place"


def _field_value(name: str, value: Scalar) -> int | bool | None:
    """The value as a parallel field takes it, or None when it is not one (a bool is no size)."""
    if name == "dp_attention":
        return value if isinstance(value, bool) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


@dataclass
class _Resolving:
    """The state :func:`resolve` builds step by step: values, where each came from, rejections."""

    spec: EngineParallel
    values: dict[str, int | bool] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)

    def set(self, name: str, value: int | bool, where: str) -> None:
        self.values[name] = value
        self.origin[name] = where

    def reject(self, message: str, *where: str) -> None:
        self.rejections.append(Rejection(message, tuple(where)))


def _apply_preset(r: _Resolving, preset: Scalar | None) -> None:
    if preset is None:
        return
    spec, known = r.spec, r.spec.presets
    if not known:
        r.reject(f"{spec.title} has no parallel presets: it has no parallel settings", "parallel.preset")
    elif not isinstance(preset, str) or preset not in known:
        r.reject(
            f"unknown parallel preset {preset!r} for {spec.title}{did_you_mean(str(preset), known)}"
            f" (its presets: {', '.join(known)})",
            "parallel.preset",
        )
    else:
        for name, preset_value in known[preset].items():
            r.set(name, preset_value, "parallel.preset")


def _apply_fields(r: _Resolving, given: Mapping[str, Scalar]) -> None:
    for name in FIELDS:
        if name not in given:
            continue
        field_value = _field_value(name, given[name])
        if field_value is None:
            r.reject(f"parallel.{name} cannot be {given[name]!r}", f"parallel.{name}")
        else:
            r.set(name, field_value, f"parallel.{name}")


def _lift_raw_flags(r: _Resolving, raw: Mapping[str, tuple[Scalar, str]]) -> None:
    for name, flag in r.spec.flags.items():
        if flag not in raw:
            continue
        raw_value, where = raw[flag]
        if name in r.values:
            r.reject(twice_message(flag, name), where, r.origin[name])
            continue
        lifted = _field_value(name, raw_value)
        if lifted is not None:  # a bad raw value is reported by the flag check
            r.set(name, lifted, where)
    for name, flags in r.spec.also_set_by.items():
        for flag in flags:
            if flag in raw and name in r.values and r.values[name] != DEFAULTS[name]:
                r.reject(twice_message(flag, name), raw[flag][1], r.origin[name])


def _fold_aliases(r: _Resolving) -> None:
    for alias, target in r.spec.same_as.items():
        if alias not in r.values:
            continue
        if target in r.values and r.values[target] != r.values[alias]:
            r.reject(
                f"parallel.{alias} and parallel.{target} are the same setting for {r.spec.title} but "
                f"differ ({r.values[alias]} and {r.values[target]})",
                r.origin[alias],
                r.origin[target],
            )
        elif target not in r.values:
            r.set(target, r.values[alias], r.origin[alias])
        del r.values[alias]
        del r.origin[alias]


def resolve(
    engine: str, given: Mapping[str, Scalar], raw: Mapping[str, tuple[Scalar, str]]
) -> ParallelResult:
    """Parallel settings of one configuration: preset, then explicit fields, then raw engine flags.

    ``given`` holds the ``parallel.*`` axes of the configuration without their prefix (``tp``,
    ``preset``); ``raw`` the engine flags by canonical name → (value, origin). Never raises.
    """
    spec = ENGINES[engine]
    r = _Resolving(spec)
    _apply_preset(r, given.get("preset"))
    _apply_fields(r, given)
    _lift_raw_flags(r, raw)
    _fold_aliases(r)
    for name, reason in spec.unsupported.items():
        if name in r.values and r.values[name] != DEFAULTS[name]:
            r.reject(reason, r.origin[name])
    settings = ParallelSettings(values=dict(r.values), origin=dict(r.origin))
    result = ParallelResult(settings=settings, rejections=[*r.rejections, *spec.rules(settings)])
    for name, value in r.values.items():
        if not r.origin[name].startswith("parallel."):
            continue  # given as a raw engine flag: it is on the command line already
        if name in spec.flags:
            result.flags[spec.flags[name]] = value
        elif name in spec.llm_api and (name != "dp_attention" or value):
            result.llm_api[spec.llm_api[name]] = value
    if engine == "vllm" and settings.ep > 1 and settings.origin.get("ep", "").startswith("parallel."):
        result.flags["enable-expert-parallel"] = True
    return result


def gpus(engine: str, settings: ParallelSettings) -> int:
    return ENGINES[engine].gpus(settings)
