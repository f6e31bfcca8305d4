"""The step-time model: the roofline's regimes, KV sizes, precisions, tensor parallelism."""

from __future__ import annotations

import pytest

from backends.sim.catalogs import find_gpu, find_model
from backends.sim.roofline import BANDWIDTH_EFFICIENCY, STEP_OVERHEAD_S, CostModel, precision_for


def cost(
    model: str = "llama-3-8b", gpu: str = "h100", tp: int = 1, quant: str | None = None, kv: str = "auto"
) -> CostModel:
    g = find_gpu(gpu)
    return CostModel(find_model(model), g, precision_for(quant, kv, g), tp)


def decode(c: CostModel, batch: int, context: int) -> float:
    """One decode step of ``batch`` sequences of ``context`` tokens each."""
    ctx = batch * context
    return c.step_time(batch, ctx + batch, ctx, batch, batch)


def prefill(c: CostModel, tokens: int) -> float:
    return c.step_time(tokens, tokens * (tokens + 1) / 2, 0, 1, 1)


def test_kv_bytes_per_token_formula() -> None:
    m = find_model("llama-3-8b")
    bf16 = 2 * m.layers * m.kv_heads * m.head_dim * 2
    assert cost().kv_bytes_per_token == bf16 == 131072
    assert cost(kv="fp8").kv_bytes_per_token == bf16 // 2
    assert cost(kv="fp8_e5m2").kv_bytes_per_token == bf16 // 2
    assert cost(tp=2).kv_bytes_per_token == bf16 // 2


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    m = find_model("qwen3-30b-a3b")  # 4 KV heads
    assert cost("qwen3-30b-a3b", tp=8).kv_bytes_per_token == 2 * m.layers * 1 * m.head_dim * 2


def test_single_decode_step_is_memory_bound_weights_over_bandwidth() -> None:
    c = cost()
    part = c.breakdown(1, 101, 100, 1, 1)
    assert part.memory_s > part.compute_s
    gpu = find_gpu("h100")
    # the weights dominate the bytes: the step is close to weights / achievable bandwidth
    assert part.memory_s == pytest.approx(
        c.weight_bytes_per_gpu / (gpu.bandwidth * BANDWIDTH_EFFICIENCY), rel=0.1
    )
    assert decode(c, 1, 100) == pytest.approx(part.memory_s + part.overhead_s)


def test_long_prefill_is_compute_bound() -> None:
    part = cost().breakdown(8192, 8192 * 8193 / 2, 0, 1, 1)
    assert part.compute_s > 5 * part.memory_s


def test_decode_step_grows_with_batch_and_context() -> None:
    c = cost()
    assert decode(c, 64, 1000) > decode(c, 8, 1000) > decode(c, 1, 1000)
    assert decode(c, 64, 4000) > decode(c, 64, 1000)
    # but far less than linearly in the batch: batching amortizes the weight reads
    assert decode(c, 64, 1000) < 8 * decode(c, 8, 1000)


def test_empty_step_and_zero_cost_take_no_time() -> None:
    assert cost().step_time(0, 0, 0, 0, 0) == 0.0
    g = find_gpu("h100")
    free = CostModel(find_model("llama-3-8b"), g, precision_for(None, "auto", g), zero_cost=True)
    assert free.step_time(8192, 1e7, 1e5, 256, 256) == 0.0


def test_tensor_parallel_lowers_latency_but_costs_gpu_time() -> None:
    one, two = cost(tp=1), cost(tp=2)
    for batch in (1, 64, 256):
        assert decode(two, batch, 1000) < decode(one, batch, 1000)
        assert 2 * decode(two, batch, 1000) > decode(one, batch, 1000)
    assert prefill(two, 4096) < prefill(one, 4096)
    assert two.breakdown(64, 64, 0, 64, 64).comm_s > 0 == one.breakdown(64, 64, 0, 64, 64).comm_s


def test_pcie_communication_costs_more_than_nvlink() -> None:
    nvlink = cost(gpu="h100", tp=2).breakdown(4096, 0, 0, 1, 1).comm_s
    pcie = cost(gpu="l40s", tp=2).breakdown(4096, 0, 0, 1, 1).comm_s
    assert pcie > 5 * nvlink


def test_quantization_shrinks_weights() -> None:
    bf16, fp8, awq = (
        cost().weight_bytes_total,
        cost(quant="fp8").weight_bytes_total,
        cost(quant="awq").weight_bytes_total,
    )
    m = find_model("llama-3-8b")
    assert bf16 == pytest.approx(2 * m.params)
    assert fp8 == pytest.approx(m.embedding_params * 2 + (m.params - m.embedding_params))
    assert awq < 0.45 * bf16
    assert decode(cost(quant="fp8"), 1, 100) < decode(cost(), 1, 100)


def test_fp8_without_fp8_tensor_cores_is_weight_only() -> None:
    a100 = find_gpu("a100-80g")
    p = precision_for("fp8", "auto", a100)
    assert p.gemm == "bf16" and p.weight_bytes == 1.0 and "weight-only" in p.label
    assert precision_for("fp8", "auto", find_gpu("h100")).gemm == "fp8"


def test_moe_reads_more_experts_as_the_batch_grows() -> None:
    c = cost("mixtral-8x7b", tp=2)
    m = find_model("mixtral-8x7b")
    one = c.breakdown(1, 1, 0, 1, 1).memory_s
    many = c.breakdown(256, 256, 0, 256, 256).memory_s
    assert many > 2.5 * one
    # a single token reads about the active parameters, a big batch about all of them
    bandwidth = find_gpu("h100").bandwidth * BANDWIDTH_EFFICIENCY
    assert one == pytest.approx(m.active_params * 2 / 2 / bandwidth, rel=0.1)
    assert many == pytest.approx(m.params * 2 / 2 / bandwidth, rel=0.1)


def test_overhead_is_part_of_every_step() -> None:
    assert decode(cost("llama-3.2-1b"), 1, 1) > STEP_OVERHEAD_S
