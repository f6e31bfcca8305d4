"""One mapper per engine: what it really does with the four quantization fields (why per engine:
the package docstring). A mapper writes flags and LLM API arguments into a
:class:`~.settings.QuantResult` and rejects, naming what the engine supports, what it cannot do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.engines.quantization.settings import QuantContext, QuantResult
from specs.errors import Rejection
from specs.model import QUANT_FIELDS


def _kv_cache_dtype(r: QuantResult, ctx: QuantContext, kv: str, title: str, extra: str = "") -> None:
    """``--kv-cache-dtype``, for engines whose flag table lists the dtypes it takes (vLLM, sim):
    the table of the engine's release is the authority, not a list kept here."""
    info = ctx.table.get("kv-cache-dtype")
    choices = [str(c) for c in (info.choices or ()) if c != "auto"] if info else []
    if kv in choices:
        r.set("kv-cache-dtype", kv, "kvcache_dtype", ctx)
    else:
        r.unsupported(title, "kvcache_dtype", ["auto", *choices], extra)


# --------------------------------------------------------------------------------------------- vLLM


def _vllm_method(r: QuantResult, gemm: str | None, moe: str | None) -> str | None:
    """vLLM's one ``--quantization`` method from the GEMM and MoE dtypes (None: unquantized)."""
    method: str | None = "fp8" if gemm == "fp8" else None
    if moe == "int8":
        if method == "fp8":
            r.reject(
                "vLLM takes one --quantization method: gemm_dtype fp8 (fp8) and moe_dtype int8 "
                "(experts_int8) cannot be combined",
                "moe_dtype",
                "gemm_dtype",
            )
        else:
            method = "experts_int8"
    elif moe == "fp8":
        if method != "fp8":
            r.reject(
                "vLLM has no fp8 quantization of the MoE experts alone: set gemm_dtype fp8 too "
                "(--quantization fp8 covers the experts) or use moe_dtype int8 (experts_int8)",
                "moe_dtype",
            )
    elif moe != "auto":
        r.unsupported("vLLM", "moe_dtype", ["auto", "fp8 (with gemm_dtype fp8)", "int8"])
    return method


def _vllm(r: QuantResult, ctx: QuantContext) -> None:
    s = r.settings
    gemm, kv, attn, moe = (s.get(n) for n in QUANT_FIELDS)
    if gemm in ("bfloat16", "float16"):
        r.set("dtype", gemm, "gemm_dtype", ctx)
    elif gemm not in ("auto", "fp8"):
        r.unsupported("vLLM", "gemm_dtype", ["auto", "bfloat16", "float16", "fp8"])
    method = _vllm_method(r, gemm, moe)
    if method is not None:
        origin_field = "moe_dtype" if method == "experts_int8" else "gemm_dtype"
        r.set("quantization", method, origin_field, ctx)
        if method == "fp8" and moe == "auto":
            r.notes.append("vLLM's --quantization fp8 quantizes the MoE experts too")
    if kv != "auto":
        _kv_cache_dtype(r, ctx, kv, "vLLM", f" (--kv-cache-dtype of vLLM {ctx.table.version})")
    if attn in ("bfloat16", "float16", "float32"):
        r.set("override-attention-dtype", attn, "attention_dtype", ctx)
    elif attn == "fp8":
        r.reject(
            "vLLM has no switch for fp8 attention: attention runs in fp8 only as a consequence of an fp8 "
            "KV cache on backends that support it; set kvcache_dtype instead",
            "attention_dtype",
        )
    elif attn != "auto":
        r.unsupported("vLLM", "attention_dtype", ["auto", "bfloat16", "float16", "float32"])


# --------------------------------------------------------------------------------------------- SGLang


def _sglang(r: QuantResult, ctx: QuantContext) -> None:
    s = r.settings
    gemm, kv, attn, moe = (s.get(n) for n in QUANT_FIELDS)
    if gemm in ("bfloat16", "float16"):
        r.set("dtype", gemm, "gemm_dtype", ctx)
    elif gemm == "fp8":
        r.set("quantization", "fp8", "gemm_dtype", ctx)
    elif gemm == "int8":
        r.set("torchao-config", "int8dq", "gemm_dtype", ctx)
        r.notes.append("gemm_dtype int8 runs as torchao int8 dynamic quantization (--torchao-config int8dq)")
    elif gemm != "auto":
        r.unsupported("SGLang", "gemm_dtype", ["auto", "bfloat16", "float16", "fp8", "int8"])
    if moe == "fp8":
        if gemm != "fp8":
            r.reject(
                "SGLang has no fp8 quantization of the MoE experts alone: set gemm_dtype fp8 too "
                "(--quantization fp8 covers the experts)",
                "moe_dtype",
            )
    elif moe == "int8":
        r.reject(
            "SGLang has no online int8 quantization of the MoE experts (w8a8_int8 and moe_wna16 need "
            "pre-quantized checkpoints): leave moe_dtype auto and pick a quantized model",
            "moe_dtype",
        )
    elif moe != "auto":
        r.unsupported("SGLang", "moe_dtype", ["auto", "fp8 (with gemm_dtype fp8)"])
    if kv != "auto":
        info = ctx.table.get("kv-cache-dtype")
        choices = [str(c) for c in (info.choices or ()) if c != "auto"] if info else []
        target = "fp8_e4m3" if kv == "fp8" else kv
        if target in choices:
            r.set("kv-cache-dtype", target, "kvcache_dtype", ctx)
            if kv == "fp8":
                r.notes.append("kvcache_dtype fp8 is fp8_e4m3 on SGLang")
        else:
            r.unsupported(
                "SGLang",
                "kvcache_dtype",
                ["auto", "fp8", *choices],
                f" (--kv-cache-dtype of SGLang {ctx.table.version})",
            )
    if attn != "auto":
        r.reject(
            f"SGLang has no attention dtype setting (its --attention-backend picks kernels, not a dtype): "
            f"attention_dtype must be auto, got {attn!r}",
            "attention_dtype",
        )


# --------------------------------------------------------------------------------------------- TensorRT-LLM


def _trtllm(r: QuantResult, ctx: QuantContext) -> None:
    s = r.settings
    gemm, kv, attn, moe = (s.get(n) for n in QUANT_FIELDS)
    backend = str(ctx.raw["backend"][0]) if "backend" in ctx.raw else "pytorch"
    engine_build = backend in ("tensorrt", "trt")
    quant_config: dict[str, str] = {}
    if gemm in ("bfloat16", "float16"):
        r.llm_api["dtype"] = gemm
    elif gemm == "fp8":
        if engine_build:
            quant_config["quant_algo"] = "FP8"
        else:
            r.reject(
                f"TensorRT-LLM's {backend} backend does not quantize online: gemm_dtype fp8 needs an FP8 "
                "checkpoint (a ModelOpt-quantized model as model.id) or backend: tensorrt",
                "gemm_dtype",
            )
    elif gemm != "auto":
        r.unsupported("TensorRT-LLM", "gemm_dtype", ["auto", "bfloat16", "float16", "fp8 (backend tensorrt)"])
    if kv in ("fp8", "fp8_e4m3"):
        if engine_build:
            quant_config["kv_cache_quant_algo"] = "FP8"
        else:
            kv_config: dict[str, Any] = {"dtype": "fp8"}
            # The file's kv_cache_config replaces the one trtllm-serve builds from its flags, so the
            # memory fraction given as a flag is carried over instead of being lost.
            if "kv_cache_free_gpu_memory_fraction" in ctx.raw:
                kv_config["free_gpu_memory_fraction"] = ctx.raw["kv_cache_free_gpu_memory_fraction"][0]
            r.llm_api["kv_cache_config"] = kv_config
    elif kv != "auto":
        r.unsupported("TensorRT-LLM", "kvcache_dtype", ["auto", "fp8 (= fp8_e4m3)"])
    if quant_config:
        r.llm_api["quant_config"] = quant_config
    if attn != "auto":
        r.reject(
            "TensorRT-LLM takes the attention precision from the checkpoint's quantization: "
            "attention_dtype must be auto",
            "attention_dtype",
        )
    if moe != "auto":
        r.reject(
            "TensorRT-LLM takes the MoE precision from the checkpoint's quantization: moe_dtype must be auto",
            "moe_dtype",
        )


# --------------------------------------------------------------------------------------------- llama.cpp

#: ggml_type ids (ggml.h) that llama-cpp-python's --type_k/--type_v take
GGML_TYPES = {
    "float32": 0,
    "float16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bfloat16": 30,
}
#: llama-server's --cache-type-k/-v spellings
LLAMA_SERVER_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def _llamacpp(r: QuantResult, ctx: QuantContext) -> None:
    s = r.settings
    gemm, kv, attn, moe = (s.get(n) for n in QUANT_FIELDS)
    native = ctx.variant == "native"
    if gemm != "auto":
        r.reject(
            "llama.cpp's weight quantization is fixed by the GGUF file: gemm_dtype must be auto (choose a "
            "quantized GGUF, e.g. Q8_0 or Q4_K_M, as model.id)",
            "gemm_dtype",
        )
    if kv != "auto":
        if kv not in GGML_TYPES:
            extra = " (llama.cpp has no fp8 KV cache; q8_0 is its 8-bit type)" if kv.startswith("fp8") else ""
            names = [LLAMA_SERVER_TYPES.get(k, k) for k in GGML_TYPES]
            r.unsupported("llama.cpp", "kvcache_dtype", ["auto", *names], extra)
        else:
            if native:
                spelled = LLAMA_SERVER_TYPES.get(kv, kv)
                r.set("cache-type-k", spelled, "kvcache_dtype", ctx)
                r.set("cache-type-v", spelled, "kvcache_dtype", ctx)
            else:
                r.set("type_k", GGML_TYPES[kv], "kvcache_dtype", ctx)
                r.set("type_v", GGML_TYPES[kv], "kvcache_dtype", ctx)
            if kv not in ("float32", "float16", "bfloat16"):
                flash = "flash-attn" if native else "flash_attn"
                if flash in ctx.raw and ctx.raw[flash][0] is False:
                    r.rejections.append(
                        Rejection(
                            "llama.cpp quantizes the V cache only with flash attention, but "
                            f"{ctx.table.spell(flash)} is false here (kvcache_dtype {kv})",
                            (*s.where("kvcache_dtype"), ctx.raw[flash][1]),
                        )
                    )
                elif flash not in ctx.raw:
                    r.flags[flash] = True
                    r.notes.append(f"flash attention turned on: llama.cpp needs it for a {kv} V cache")
    if attn != "auto":
        r.reject("llama.cpp has no attention dtype setting: attention_dtype must be auto", "attention_dtype")
    if moe != "auto":
        r.reject(
            "llama.cpp's MoE weights are quantized in the GGUF file: moe_dtype must be auto", "moe_dtype"
        )


# --------------------------------------------------------------------------------------------- sim


def _sim(r: QuantResult, ctx: QuantContext) -> None:
    s = r.settings
    gemm, kv, attn, moe = (s.get(n) for n in QUANT_FIELDS)
    if gemm in ("bfloat16", "float16"):
        r.set("dtype", gemm, "gemm_dtype", ctx)
    elif gemm in ("fp8", "int8"):
        r.set("quantization", gemm, "gemm_dtype", ctx)
    elif gemm != "auto":
        r.unsupported("the sim engine", "gemm_dtype", ["auto", "bfloat16", "float16", "fp8", "int8"])
    if kv != "auto":
        _kv_cache_dtype(r, ctx, kv, "the sim engine")
    if attn != "auto":
        r.reject(
            "the sim engine has no attention dtype setting: attention_dtype must be auto", "attention_dtype"
        )
    if moe == "fp8":
        if gemm != "fp8":
            r.reject("the sim engine quantizes experts only with gemm_dtype fp8", "moe_dtype")
    elif moe != "auto":
        r.unsupported("the sim engine", "moe_dtype", ["auto", "fp8 (with gemm_dtype fp8)"])


MAPPERS: dict[str, Callable[[QuantResult, QuantContext], None]] = {
    "vllm": _vllm,
    "sglang": _sglang,
    "trtllm": _trtllm,
    "llamacpp": _llamacpp,
    "sim": _sim,
}
