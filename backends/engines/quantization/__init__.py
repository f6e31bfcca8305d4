"""Engine-agnostic quantization: four fields, five presets, and what each engine really does
with them.

The fields (``specs.model.QUANT_FIELDS``):

* ``gemm_dtype``: weights and activations of the linear layers: ``auto``, ``bfloat16``,
  ``float16``, ``fp8`` (online dynamic FP8), ``int8``;
* ``kvcache_dtype``: the KV cache: ``auto``, ``fp8`` (= ``fp8_e4m3``, as vLLM defines it),
  ``fp8_e4m3``, ``fp8_e5m2``, ``bfloat16`` ..., or llama.cpp's ``q8_0``/``q4_0``/...;
* ``attention_dtype``: the attention computation;
* ``moe_dtype``: the MoE experts: ``auto``, ``fp8``, ``int8``.

Why per-engine mappers instead of one table: the engines disagree on what exists. vLLM has one
``--quantization`` method per process (so fp8 linear layers and int8 experts cannot be combined),
SGLang has no attention dtype at all (the original system wrote ``--attention-backend fp8``,
which is not a backend), TensorRT-LLM's PyTorch backend does not quantize online and takes its KV
cache dtype from the LLM API file, and llama.cpp's weights are whatever the GGUF file holds. A
value an engine cannot honour is a :class:`Rejection` naming what it supports, never silently
dropped. ``auto`` always means "the engine's default" and emits nothing.

Two modules: :mod:`~.settings` (the vocabulary and one configuration's settings) and
:mod:`~.mappers` (one per engine); the flags each field may write and :func:`resolve`, which
the engine pipeline (:mod:`backends.engines.common`) calls, are here.
"""

from __future__ import annotations

from collections.abc import Mapping

from backends.engines.quantization.mappers import MAPPERS
from backends.engines.quantization.settings import (
    PRESETS,
    QuantContext,
    QuantResult,
    settings_from,
    twice_message,
)
from specs.model import Scalar

__all__ = ["PRESETS", "QuantContext", "QuantResult", "owned_flags", "resolve", "twice_message"]


#: field → engine flags the mapping may write, per engine (and llama.cpp variant): an engine flag
#: given directly *and* a quantization field that writes it is a "given twice" error
OWNED: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {
        "gemm_dtype": ("quantization", "dtype"),
        "kvcache_dtype": ("kv-cache-dtype",),
        "attention_dtype": ("override-attention-dtype",),
        "moe_dtype": ("quantization",),
    },
    "sglang": {
        "gemm_dtype": ("quantization", "dtype", "torchao-config"),
        "kvcache_dtype": ("kv-cache-dtype",),
        "moe_dtype": ("quantization",),
    },
    "trtllm": {},
    "llamacpp": {"kvcache_dtype": ("type_k", "type_v")},
    "llamacpp-native": {"kvcache_dtype": ("cache-type-k", "cache-type-v")},
    "sim": {"gemm_dtype": ("quantization", "dtype"), "kvcache_dtype": ("kv-cache-dtype",)},
}


def owned_flags(engine: str, variant: str | None = None) -> dict[str, tuple[str, ...]]:
    key = "llamacpp-native" if engine == "llamacpp" and variant == "native" else engine
    return OWNED[key]


def resolve(given: Mapping[str, Scalar], ctx: QuantContext) -> QuantResult:
    """Quantization of one configuration for ``ctx.engine``. Never raises."""
    settings, rejections = settings_from(given)
    result = QuantResult(settings=settings, rejections=rejections)
    MAPPERS[ctx.engine](result, ctx)
    return result
