"""How long one engine step takes: a roofline over the GPU catalog's numbers.

A step of a continuous-batching engine runs every scheduled token (prefill chunks and one decode
token per running sequence) through the model once. Its time is taken as

    max(compute, memory) + tensor-parallel communication + fixed overheads

* **compute** = GEMM FLOPs ``2 * (active params - embeddings) * tokens + 2 * vocab * hidden *
  sampled`` over the precision's dense peak times :data:`MFU`, plus attention FLOPs
  ``4 * layers * heads * head_dim * (query, key) pairs`` over the 16-bit peak;
* **memory** = bytes read from HBM (weights once per step, MoE experts only as far as the
  batch touches them; the KV cache of every attended context; the KV written) over bandwidth
  times :data:`BANDWIDTH_EFFICIENCY`;
* **communication** (TP > 1) = two ring all-reduces of the step's activations per layer over
  the GPU's link, each with a fixed latency; vLLM does not overlap them with compute, so they add;
* **overheads** = a fixed per-step cost (scheduling, sampling, graph launch) and a small cost
  per scheduled sequence.

Everything is per GPU: with tensor parallelism every GPU holds and reads ``1/TP`` of the
weights and KV heads and does ``1/TP`` of the FLOPs. The constants below are deliberately few
and round; ``docs/sim-engine.md`` says where they come from and what they leave out.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.sim.catalogs import GpuSpec, ModelSpec

#: fraction of the dense tensor-core peak that large GEMMs reach in serving engines
MFU = 0.5
#: fraction of the spec-sheet memory bandwidth that streaming kernels reach
BANDWIDTH_EFFICIENCY = 0.8
#: per step: scheduler, sampler, input preparation, CUDA-graph launch
STEP_OVERHEAD_S = 1.0e-3
#: per scheduled sequence and step: bookkeeping, detokenization, output processing
SEQ_OVERHEAD_S = 8.0e-6
#: activations travel in 16 bits
ACTIVATION_BYTES = 2


@dataclass(frozen=True)
class Precision:
    """What the weight and KV-cache dtypes mean for memory and speed."""

    label: str
    #: bytes per quantized weight (embeddings and LM head stay 16-bit)
    weight_bytes: float
    #: key of :attr:`GpuSpec.flops` the GEMMs run at
    gemm: str
    #: extra efficiency factor of the GEMM kernels (dequantizing 4-bit weights costs time)
    gemm_efficiency: float
    kv_bytes: int


def precision_for(quantization: str | None, kv_cache_dtype: str, gpu: GpuSpec) -> Precision:
    """Map vLLM's ``--quantization`` and ``--kv-cache-dtype`` onto bytes and a compute peak.

    FP8 and INT8 weights run at the 8-bit tensor-core rate where the GPU has one; on a GPU
    without FP8 (A100) FP8 checkpoints run weight-only (Marlin) at the 16-bit rate, as in vLLM.
    AWQ and GPTQ are 4-bit weights with 16-bit group scales (group 128) and 16-bit compute.
    """
    kv = 1 if kv_cache_dtype.startswith("fp8") else 2
    q = quantization or "none"
    if q == "none":
        return Precision("bf16", 2.0, "bf16", 1.0, kv)
    if q in ("fp8", "int8"):
        gemm = q if q in gpu.flops else "bf16"
        return Precision(q if gemm == q else f"{q} (weight-only)", 1.0, gemm, 1.0, kv)
    if q in ("awq", "gptq"):
        return Precision(f"{q} (4-bit)", 0.5 + 4 / 128, "bf16", 0.8, kv)
    raise ValueError(f"unknown quantization {quantization!r}")


@dataclass(frozen=True)
class StepBreakdown:
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.comm_s + self.overhead_s


class CostModel:
    """Step time of one model on one GPU type at one tensor-parallel size and precision.

    The per-configuration constants are folded once in ``__init__`` so that :meth:`step_time`,
    called for every simulated step, is a handful of float operations.
    """

    def __init__(
        self,
        model: ModelSpec,
        gpu: GpuSpec,
        precision: Precision,
        tensor_parallel_size: int = 1,
        *,
        zero_cost: bool = False,
    ) -> None:
        self.model = model
        self.gpu = gpu
        self.precision = precision
        self.tp = tp = tensor_parallel_size
        self.zero_cost = zero_cost
        m = model
        lm_head = m.vocab_size * m.hidden_size
        quantizable = m.params - m.embedding_params
        #: all GPUs together: what must fit in memory
        self.weight_bytes_total = m.embedding_params * 2 + quantizable * precision.weight_bytes
        self.weight_bytes_per_gpu = self.weight_bytes_total / tp
        # read every step: the non-expert layers and the LM head (the input embedding is a
        # gather of a few rows, not a full read); experts are added as the batch touches them
        self._static_read = ((quantizable - m.expert_params) * precision.weight_bytes + lm_head * 2) / tp
        self._expert_read = m.expert_params * precision.weight_bytes / tp
        self._expert_miss = 1.0 - m.experts_per_token / m.num_experts if m.is_moe else 0.0
        kv_heads_per_gpu = max(1, m.kv_heads // tp)
        self.kv_bytes_per_token = 2 * m.layers * kv_heads_per_gpu * m.head_dim * precision.kv_bytes
        self._gemm_flops_per_token = 2.0 * (m.active_params - m.embedding_params) / tp
        self._lm_head_flops = 2.0 * lm_head / tp
        self._attn_flops_per_pair = 4.0 * m.layers * m.attention_heads * m.head_dim / tp
        self._gemm_rate = gpu.flops[precision.gemm] * MFU * precision.gemm_efficiency
        self._attn_rate = gpu.flops["bf16"] * MFU
        self._bandwidth = gpu.bandwidth * BANDWIDTH_EFFICIENCY
        # two all-reduces per layer (after attention, after the MLP), ring algorithm
        self._comm_fixed = 2 * m.layers * gpu.link_latency if tp > 1 else 0.0
        self._comm_per_token = (
            2 * m.layers * 2 * (tp - 1) / tp * m.hidden_size * ACTIVATION_BYTES / gpu.link_bandwidth
            if tp > 1
            else 0.0
        )

    def _parts(
        self, tokens: int, attn_pairs: float, kv_tokens_read: float, seqs: int, sampled: int
    ) -> tuple[float, float, float, float]:
        compute = (self._gemm_flops_per_token * tokens + self._lm_head_flops * sampled) / self._gemm_rate
        compute += self._attn_flops_per_pair * attn_pairs / self._attn_rate
        weights = self._static_read
        if self._expert_read:
            # expected share of experts that at least one of the step's tokens is routed to
            weights += self._expert_read * (1.0 - self._expert_miss**tokens)
        memory = (weights + self.kv_bytes_per_token * (kv_tokens_read + tokens)) / self._bandwidth
        comm = self._comm_fixed + self._comm_per_token * tokens
        return compute, memory, comm, STEP_OVERHEAD_S + SEQ_OVERHEAD_S * seqs

    def breakdown(
        self, tokens: int, attn_pairs: float, kv_tokens_read: float, seqs: int, sampled: int
    ) -> StepBreakdown:
        """The parts of one step's time; see the module docstring for the formulas.

        ``attn_pairs``: (query, key) pairs attended; ``kv_tokens_read``: context tokens whose KV
        is read; ``seqs``: sequences scheduled; ``sampled``: sequences that sample a token.
        """
        if self.zero_cost or tokens <= 0:
            return StepBreakdown(0.0, 0.0, 0.0, 0.0)
        return StepBreakdown(*self._parts(tokens, attn_pairs, kv_tokens_read, seqs, sampled))

    def step_time(
        self, tokens: int, attn_pairs: float, kv_tokens_read: float, seqs: int, sampled: int
    ) -> float:
        """Simulated seconds of one step (0 for an empty step or with ``zero_cost``)."""
        if self.zero_cost or tokens <= 0:
            return 0.0
        compute, memory, comm, overhead = self._parts(tokens, attn_pairs, kv_tokens_read, seqs, sampled)
        return (compute if compute > memory else memory) + comm + overhead
