"""From flags to a runnable engine: catalog lookups, vLLM's start-up checks, the memory plan.

Everything a real engine decides before it serves its first request is decided here, once, as a
pure function of :class:`~backends.sim.config.SimConfig` — so the unit tests, the offline
simulator and the HTTP server all see the same KV capacity and the same start-up failures.

The memory plan follows vLLM's profiling: of ``gpu_memory_utilization * GPU memory`` (per GPU),
the weights (``1/TP`` each), the peak activations of a ``max_num_batched_tokens`` forward pass
plus the sampler's logits, and a fixed non-PyTorch reserve (CUDA context, CUDA graphs, NCCL
buffers) are taken; what is left becomes KV-cache blocks. Too little at any stage is a start-up
failure with the message vLLM prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from backends.sim.catalogs import GIB, GpuSpec, ModelSpec, find_gpu, find_model
from backends.sim.config import DEFAULT_MAX_NUM_BATCHED_TOKENS, SimConfig
from backends.sim.errors import OutOfMemoryError, StartupError
from backends.sim.roofline import ACTIVATION_BYTES, CostModel, Precision, precision_for

#: CUDA context, CUDA graphs and allocator slack per GPU
NON_TORCH_BYTES = int(0.75 * GIB)
#: NCCL buffers per GPU when tensor-parallel
NCCL_BYTES = int(0.25 * GIB)
#: GPUs one node holds; the simulator models a single node
MAX_TENSOR_PARALLEL = 8
#: simulated model load: a fixed part (process start, CUDA graphs) and weights read from page cache
STARTUP_FIXED_S = 3.0
LOAD_BANDWIDTH = 4e9


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory, in bytes, as vLLM logs it at start-up."""

    total: int
    budget: int
    weights: int
    activations: int
    non_torch: int
    kv_cache: int
    kv_bytes_per_token: int
    block_size: int
    num_blocks: int

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def to_dict(self) -> dict[str, Any]:
        gib = {
            "total_gib": self.total / GIB,
            "budget_gib": self.budget / GIB,
            "weights_gib": self.weights / GIB,
            "activations_gib": self.activations / GIB,
            "non_torch_gib": self.non_torch / GIB,
            "kv_cache_gib": self.kv_cache / GIB,
        }
        return {
            **{k: round(v, 3) for k, v in gib.items()},
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "block_size": self.block_size,
            "num_gpu_blocks": self.num_blocks,
            "kv_capacity_tokens": self.kv_capacity_tokens,
        }


@dataclass(frozen=True)
class EngineSetup:
    """A configuration that passed every start-up check, with its derived numbers."""

    config: SimConfig
    model: ModelSpec
    gpu: GpuSpec
    precision: Precision
    cost: CostModel
    memory: MemoryPlan
    max_model_len: int
    max_num_batched_tokens: int
    #: simulated seconds until ready (divide by ``config.time_scale`` for wall time)
    startup_seconds: float

    @property
    def gpus(self) -> int:
        return self.config.tensor_parallel_size

    def summary(self) -> dict[str, Any]:
        """What ``GET /sim/info`` and the start-up log show."""
        return {
            "simulated": True,
            "engine": "autotuner-sim",
            "model": self.model.key,
            "hf_id": self.model.hf_id,
            "gpu": self.gpu.key,
            "gpu_name": self.gpu.name,
            "gpus": self.gpus,
            "precision": self.precision.label,
            "kv_cache_dtype": self.config.kv_cache_dtype,
            "max_model_len": self.max_model_len,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_num_seqs": self.config.max_num_seqs,
            "time_scale": self.config.time_scale,
            "memory": self.memory.to_dict(),
            "config": self.config.to_dict(),
        }


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _valid_tp(model: ModelSpec) -> str:
    sizes = [
        n
        for n in range(1, MAX_TENSOR_PARALLEL + 1)
        if model.attention_heads % n == 0 and (model.kv_heads % n == 0 or n % model.kv_heads == 0)
    ]
    return f"use --tensor-parallel-size {', '.join(map(str, sizes))} for {model.key}"


def _check_parallel(model: ModelSpec, tp: int) -> None:
    if tp > MAX_TENSOR_PARALLEL:
        raise StartupError(
            f"tensor_parallel_size {tp} is larger than one node's {MAX_TENSOR_PARALLEL} GPUs, "
            "and the simulator models a single node; use at most 8"
        )
    if model.attention_heads % tp:
        raise StartupError(
            f"Total number of attention heads ({model.attention_heads}) must be divisible by "
            f"tensor parallel size ({tp}); {_valid_tp(model)}."
        )
    if model.kv_heads % tp and tp % model.kv_heads:
        raise StartupError(
            f"Total number of key-value heads ({model.kv_heads}) and tensor parallel size ({tp}) "
            f"must divide one another; {_valid_tp(model)}."
        )


def _activation_bytes(model: ModelSpec, tokens: int, seqs: int, tp: int) -> int:
    """Peak of vLLM's profiling forward pass: hidden states and MLP intermediates of ``tokens``,
    plus fp32 logits and probabilities of ``seqs`` sampled rows."""
    mlp = model.intermediate_size * (model.experts_per_token if model.is_moe else 1)
    per_token = (4 * model.hidden_size + 2 * mlp / tp) * ACTIVATION_BYTES
    return int(tokens * per_token + seqs * model.vocab_size * 4 * 2)


def build(config: SimConfig) -> EngineSetup:
    """Resolve and check ``config``; :class:`StartupError` / :class:`OutOfMemoryError` if it cannot run."""
    model = find_model(config.model)
    gpu = find_gpu(config.gpu)
    tp = config.tensor_parallel_size
    _check_parallel(model, tp)

    max_model_len = config.max_model_len or model.max_position_embeddings
    if max_model_len > model.max_position_embeddings:
        raise StartupError(
            f"User-specified max_model_len ({max_model_len}) is greater than the derived max_model_len "
            f"(max_position_embeddings={model.max_position_embeddings} in {model.hf_id}'s config.json); "
            f"lower --max-model-len to at most {model.max_position_embeddings}"
        )
    batched = config.max_num_batched_tokens
    if batched is None:
        batched = DEFAULT_MAX_NUM_BATCHED_TOKENS
        if not config.enable_chunked_prefill:
            batched = max(batched, max_model_len)
    if batched < config.max_num_seqs:
        raise StartupError(
            f"max_num_batched_tokens ({batched}) must be greater than or equal to max_num_seqs "
            f"({config.max_num_seqs}); raise --max-num-batched-tokens or lower --max-num-seqs."
        )
    if not config.enable_chunked_prefill and batched < max_model_len:
        raise StartupError(
            f"max_num_batched_tokens ({batched}) is smaller than max_model_len ({max_model_len}). "
            "This effectively limits the maximum sequence length to max_num_batched_tokens and makes "
            "vLLM reject longer sequences. Please increase max_num_batched_tokens or decrease max_model_len."
        )

    precision = precision_for(config.quantization, config.kv_cache_dtype, gpu)
    cost = CostModel(model, gpu, precision, tp, zero_cost=config.zero_cost)
    memory = _plan_memory(config, model, gpu, cost, batched, max_model_len)
    startup = config.startup_seconds
    if startup is None:
        startup = 0.0 if config.zero_cost else STARTUP_FIXED_S + cost.weight_bytes_per_gpu / LOAD_BANDWIDTH
    return EngineSetup(
        config=config,
        model=model,
        gpu=gpu,
        precision=precision,
        cost=cost,
        memory=memory,
        max_model_len=max_model_len,
        max_num_batched_tokens=batched,
        startup_seconds=startup,
    )


def _plan_memory(
    config: SimConfig, model: ModelSpec, gpu: GpuSpec, cost: CostModel, batched: int, max_model_len: int
) -> MemoryPlan:
    tp = config.tensor_parallel_size
    util = config.gpu_memory_utilization
    budget = int(gpu.memory_bytes * util)
    weights = int(cost.weight_bytes_per_gpu)
    setting = f"--tensor-parallel-size {tp}, {cost.precision.label} weights"
    if weights > budget:
        raise OutOfMemoryError(
            f"CUDA out of memory (simulated, while loading weights). The weights of {model.key} need "
            f"{_gib(weights)} per GPU with {setting}, but --gpu-memory-utilization {util:g} of the "
            f"{gpu.name}'s {_gib(gpu.memory_bytes)} allows {_gib(budget)}. Use a larger "
            "--tensor-parallel-size, a --quantization, or a GPU with more memory."
        )
    activations = _activation_bytes(model, batched, config.max_num_seqs, tp)
    non_torch = NON_TORCH_BYTES + (NCCL_BYTES if tp > 1 else 0)
    kv_cache = budget - weights - activations - non_torch
    block_bytes = cost.kv_bytes_per_token * config.block_size
    num_blocks = max(0, kv_cache // block_bytes)
    if num_blocks <= 0:
        raise OutOfMemoryError(
            "No available memory for the cache blocks (out of memory, simulated). Of "
            f"{_gib(budget)} (--gpu-memory-utilization {util:g}), the weights take {_gib(weights)}, "
            f"activations for --max-num-batched-tokens {batched} take {_gib(activations)} and CUDA "
            f"takes {_gib(non_torch)}. Try increasing `gpu_memory_utilization`, lowering "
            "--max-num-batched-tokens, or a larger --tensor-parallel-size.",
            kind="ValueError",
        )
    capacity = num_blocks * config.block_size
    if capacity < max_model_len:
        needed = math.ceil(max_model_len / config.block_size) * block_bytes
        raise OutOfMemoryError(
            f"To serve at least one request with the model's max seq len ({max_model_len}), "
            f"{_gib(needed)} KV cache is needed, which is larger than the available KV cache memory "
            f"({_gib(kv_cache)}): out of memory (simulated). Based on the available memory, the estimated "
            f"maximum model length is {capacity}. Try increasing `gpu_memory_utilization` or decreasing "
            "`max_model_len` when initializing the engine.",
            kind="ValueError",
        )
    return MemoryPlan(
        total=gpu.memory_bytes,
        budget=budget,
        weights=weights,
        activations=activations,
        non_torch=non_torch,
        kv_cache=int(kv_cache),
        kv_bytes_per_token=cost.kv_bytes_per_token,
        block_size=config.block_size,
        num_blocks=int(num_blocks),
    )
