"""Engine-agnostic parallelism: the fields, the named presets of each engine, the rules each
engine really enforces, the GPUs an experiment needs, and the flags each field becomes.

Why one file for all engines: the same words (``tp``, ``dp``, ``ep``) mean different GPU counts
on different engines. SGLang's dp-attention runs data parallelism *inside* the tensor-parallel
GPUs, vLLM's expert parallelism spans ``tp × dp`` GPUs and cannot be sized on its own, and
TensorRT-LLM has no data parallelism at all. Keeping the rules side by side is what keeps the
GPU counts (and so the per-GPU metrics and GPU leases) honest.

A setting the engine lacks is an error, never dropped: the original system ignored presets at run
time and measured something other than what the spec said.

Where a value comes from is kept (:attr:`ParallelSettings.origin`): the ``parallel`` block, a
preset, or an engine flag given directly (``tensor-parallel-size: [1, 2]`` in ``parameters`` is
read as ``tp``). The origin lets ``check_spec`` point at the YAML line responsible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from specs.errors import Rejection
from specs.model import PARALLEL_BOOL_FIELDS, PARALLEL_FIELDS, Scalar
from specs.suggest import did_you_mean

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


@dataclass
class ParallelResult:
    settings: ParallelSettings
    #: engine flags (canonical table names) for fields set in the parallel block or a preset
    flags: dict[str, Scalar] = field(default_factory=dict)
    #: LLM API arguments (TensorRT-LLM's ``--extra_llm_api_options`` file)
    llm_api: dict[str, Any] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)


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


def _lacks(title: str, name: str, hint: str = "") -> str:
    return f"{title} has no {DESCRIPTION[name]}: parallel.{name} must be 1{hint}"


# --------------------------------------------------------------------------------------------- vLLM


def _vllm_rules(p: ParallelSettings) -> list[Rejection]:
    out = []
    if p.is_set("ep") and p.ep != p.tp * p.dp:
        out.append(
            Rejection(
                "vLLM's expert parallelism spans tp x dp GPUs: with --enable-expert-parallel the "
                f"expert-parallel size is tp x dp = {p.tp * p.dp}, so ep must be 1 or {p.tp * p.dp} "
                f"(got ep={p.ep})",
                p.where("ep", "tp", "dp"),
            )
        )
    if p.dcp > 1 and p.tp % p.dcp:
        out.append(
            Rejection(
                f"vLLM needs tp divisible by dcp (tp={p.tp}, dcp={p.dcp}): decode context parallelism runs "
                "inside the tensor-parallel GPUs",
                p.where("dcp", "tp"),
            )
        )
    return out


VLLM = EngineParallel(
    title="vLLM",
    flags={
        "tp": "tensor-parallel-size",
        "pp": "pipeline-parallel-size",
        "dp": "data-parallel-size",
        "dcp": "decode-context-parallel-size",
    },
    llm_api={},
    unsupported={
        "cp": _lacks("vLLM 0.11", "cp", " (it has decode context parallelism only: use dcp)"),
        "moe_tp": _lacks("vLLM", "moe_tp", " (MoE layers use tp, or tp x dp experts with ep)"),
        "moe_dense_tp": _lacks("vLLM", "moe_dense_tp"),
        "dp_attention": "vLLM has no data-parallel attention switch: parallel.dp_attention must be false "
        "(with dp > 1 and ep, vLLM already runs attention data-parallel for MoE models)",
    },
    presets={
        "single-gpu": {"tp": 1},
        "high-throughput": {"tp": 1, "dp": 2},
        "large-model-tp": {"tp": 4},
        "large-model-tp-pp": {"tp": 4, "pp": 2},
        "moe-optimized": {"tp": 2, "dp": 2, "ep": 4},
        "long-context": {"tp": 4, "dcp": 2},
        "balanced": {"tp": 2, "dp": 2},
    },
    rules=_vllm_rules,
    gpus=lambda p: p.tp * p.pp * p.dp,
    also_set_by={"ep": ("enable-expert-parallel",)},
    same_as={"moe_ep": "ep"},
)


# --------------------------------------------------------------------------------------------- SGLang


def _sglang_rules(p: ParallelSettings) -> list[Rejection]:
    out = []
    if p.dp_attention and p.dp == 1:
        out.append(
            Rejection(
                "dp_attention needs dp > 1: SGLang turns dp-attention off when dp is 1, so the setting would "
                "not be what runs",
                p.where("dp_attention", "dp"),
            )
        )
    elif p.dp_attention and p.tp % p.dp:
        out.append(
            Rejection(
                f"SGLang's dp-attention needs tp divisible by dp (tp={p.tp}, dp={p.dp}): with dp-attention "
                "the dp attention groups live inside the tp GPUs",
                p.where("tp", "dp", "dp_attention"),
            )
        )
    if p.ep > 1 and p.tp % p.ep:
        out.append(
            Rejection(
                f"SGLang needs tp divisible by ep (tp={p.tp}, ep={p.ep}): experts are split inside the "
                "tensor-parallel group",
                p.where("ep", "tp"),
            )
        )
    if p.is_set("moe_dense_tp"):
        out.append(
            Rejection(
                f"SGLang supports moe_dense_tp 1 only (got {p.get('moe_dense_tp')})",
                p.where("moe_dense_tp"),
            )
        )
    return out


SGLANG = EngineParallel(
    title="SGLang",
    flags={
        "tp": "tp-size",
        "pp": "pp-size",
        "dp": "dp-size",
        "ep": "ep-size",
        "moe_dense_tp": "moe-dense-tp-size",
        "dp_attention": "enable-dp-attention",
    },
    llm_api={},
    unsupported={
        "cp": _lacks("SGLang 0.5", "cp"),
        "dcp": _lacks("SGLang 0.5", "dcp"),
        "moe_tp": _lacks("SGLang", "moe_tp", " (MoE layers use tp / ep)"),
    },
    presets={
        "single-gpu": {"tp": 1},
        "high-throughput": {"tp": 1, "dp": 2},
        "large-model-tp": {"tp": 4},
        "large-model-tp-pp": {"tp": 4, "pp": 2},
        "moe-optimized": {"tp": 4, "dp": 4, "ep": 4, "dp_attention": True, "moe_dense_tp": 1},
        "balanced": {"tp": 2, "dp": 2},
    },
    rules=_sglang_rules,
    # dp-attention splits the tp GPUs into dp attention groups; plain dp runs dp replicas
    gpus=lambda p: p.tp * p.pp * (1 if p.dp_attention else p.dp),
    same_as={"moe_ep": "ep"},
)


# --------------------------------------------------------------------------------------------- TensorRT-LLM


def _trtllm_rules(p: ParallelSettings) -> list[Rejection]:
    out = []
    moe_tp = p.size("moe_tp") if "moe_tp" in p.values else None
    ep = p.ep if "ep" in p.values else None
    if moe_tp is not None and ep is not None:
        if moe_tp * ep != p.tp:
            out.append(
                Rejection(
                    f"TensorRT-LLM needs moe_tp x ep = tp (moe_tp={moe_tp}, ep={ep}, tp={p.tp}): the MoE "
                    "layers are split over the tensor-parallel GPUs",
                    p.where("moe_tp", "ep", "tp"),
                )
            )
    elif ep is not None and p.tp % ep:
        out.append(
            Rejection(f"TensorRT-LLM needs tp divisible by ep (tp={p.tp}, ep={ep})", p.where("ep", "tp"))
        )
    elif moe_tp is not None and p.tp % moe_tp:
        out.append(
            Rejection(
                f"TensorRT-LLM needs tp divisible by moe_tp (tp={p.tp}, moe_tp={moe_tp})",
                p.where("moe_tp", "tp"),
            )
        )
    return out


TRTLLM = EngineParallel(
    title="TensorRT-LLM",
    flags={"tp": "tp_size", "pp": "pp_size", "ep": "ep_size"},
    llm_api={
        "cp": "context_parallel_size",
        "moe_tp": "moe_tensor_parallel_size",
        "dp_attention": "enable_attention_dp",
    },
    unsupported={
        "dp": "TensorRT-LLM has no data parallelism: parallel.dp must be 1 (run more replicas instead, or "
        "set dp_attention: true for data-parallel attention inside the tp GPUs)",
        "dcp": _lacks("TensorRT-LLM", "dcp", " (use cp)"),
        "moe_dense_tp": _lacks("TensorRT-LLM", "moe_dense_tp"),
    },
    presets={
        "single-gpu": {"tp": 1},
        "high-throughput": {"tp": 2, "dp_attention": True},
        "large-model-tp": {"tp": 4},
        "large-model-tp-pp": {"tp": 4, "pp": 2},
        "moe-optimized": {"tp": 4, "moe_tp": 1, "ep": 4},
        "long-context": {"tp": 2, "cp": 2},
    },
    rules=_trtllm_rules,
    gpus=lambda p: p.tp * p.pp * p.cp,
    same_as={"moe_ep": "ep"},
)


# --------------------------------------------------------------------------------------------- llama.cpp, sim


def _no_rules(p: ParallelSettings) -> list[Rejection]:
    return []


LLAMACPP = EngineParallel(
    title="llama.cpp",
    flags={},
    llm_api={},
    unsupported={
        name: f"llama.cpp runs one process on at most one GPU here: parallel.{name} must be "
        + ("false" if name == "dp_attention" else "1")
        + " (tune n_gpu_layers / split_mode as engine flags instead)"
        for name in FIELDS
    },
    presets={},
    rules=_no_rules,
    gpus=lambda p: 0,
)

SIM = EngineParallel(
    title="the sim engine",
    flags={"tp": "tensor-parallel-size"},
    llm_api={},
    unsupported={
        name: f"the sim engine simulates tensor parallelism only: parallel.{name} must be "
        + ("false" if name == "dp_attention" else "1")
        for name in FIELDS
        if name != "tp"
    },
    presets={"single-gpu": {"tp": 1}, "balanced": {"tp": 2}, "large-model-tp": {"tp": 4}},
    rules=_no_rules,
    gpus=lambda p: p.tp,
)

ENGINES: dict[str, EngineParallel] = {
    "vllm": VLLM,
    "sglang": SGLANG,
    "trtllm": TRTLLM,
    "llamacpp": LLAMACPP,
    "sim": SIM,
}


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
