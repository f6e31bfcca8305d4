"""Each engine's parallelism side by side: its flags, presets, the rules it really enforces and
the GPUs a configuration takes (why side by side: the package docstring)."""

from __future__ import annotations

from backends.engines.parallel.settings import FIELDS, EngineParallel, ParallelSettings, lacks
from specs.errors import Rejection

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
        "cp": lacks("vLLM 0.11", "cp", " (it has decode context parallelism only: use dcp)"),
        "moe_tp": lacks("vLLM", "moe_tp", " (MoE layers use tp, or tp x dp experts with ep)"),
        "moe_dense_tp": lacks("vLLM", "moe_dense_tp"),
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
        "cp": lacks("SGLang 0.5", "cp"),
        "dcp": lacks("SGLang 0.5", "dcp"),
        "moe_tp": lacks("SGLang", "moe_tp", " (MoE layers use tp / ep)"),
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
        "dcp": lacks("TensorRT-LLM", "dcp", " (use cp)"),
        "moe_dense_tp": lacks("TensorRT-LLM", "moe_dense_tp"),
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
