"""Start-up: vLLM's configuration checks and the memory plan, including out-of-memory."""

from __future__ import annotations

import pytest

from backends.sim import OutOfMemoryError, SimConfig, StartupError, build
from backends.sim.catalogs import GIB, find_model


def test_memory_plan_adds_up() -> None:
    setup = build(SimConfig(model="llama-3-8b", gpu="h100"))
    m = setup.memory
    assert m.budget == int(0.9 * m.total)
    assert m.weights + m.activations + m.non_torch + m.kv_cache == m.budget
    assert m.num_blocks == m.kv_cache // (m.kv_bytes_per_token * m.block_size)
    # about 15 GiB of bf16 weights for 8B parameters
    assert m.weights / GIB == pytest.approx(8.03e9 * 2 / GIB, rel=0.01)


def test_fp8_kv_cache_doubles_the_blocks() -> None:
    auto = build(SimConfig(kv_cache_dtype="auto")).memory.num_blocks
    fp8 = build(SimConfig(kv_cache_dtype="fp8")).memory.num_blocks
    assert fp8 in (2 * auto, 2 * auto + 1)


def test_more_memory_more_blocks() -> None:
    low = build(SimConfig(gpu_memory_utilization=0.5)).memory.num_blocks
    high = build(SimConfig(gpu_memory_utilization=0.95)).memory.num_blocks
    assert high > 1.5 * low
    assert build(SimConfig(gpu="h200")).memory.num_blocks > build(SimConfig(gpu="h100")).memory.num_blocks


def test_tensor_parallel_shards_weights_and_adds_kv_capacity() -> None:
    one = build(SimConfig(tensor_parallel_size=1))
    two = build(SimConfig(tensor_parallel_size=2))
    assert two.memory.weights == pytest.approx(one.memory.weights / 2, rel=0.001)
    assert two.memory.kv_capacity_tokens > 2 * one.memory.kv_capacity_tokens
    assert two.gpus == 2


def test_70b_does_not_fit_one_rtx_4090() -> None:
    with pytest.raises(OutOfMemoryError) as info:
        build(SimConfig(model="llama-3-70b", gpu="rtx-4090"))
    text = str(info.value)
    assert "out of memory" in text.lower()
    assert text.startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert "--tensor-parallel-size" in text  # says what to change


def test_70b_fits_with_enough_tensor_parallelism() -> None:
    with pytest.raises(OutOfMemoryError):
        build(SimConfig(model="llama-3-70b", gpu="h100", tensor_parallel_size=1))
    assert build(SimConfig(model="llama-3-70b", gpu="h100", tensor_parallel_size=4)).memory.num_blocks > 0
    assert build(SimConfig(model="llama-3-70b", gpu="h100", quantization="awq")).memory.num_blocks > 0


def test_no_memory_left_for_the_cache() -> None:
    # 8B bf16 weights take ~15 GiB of a 24 GiB card: at 0.65 only activations fit
    with pytest.raises(OutOfMemoryError, match="No available memory for the cache blocks") as info:
        build(SimConfig(model="llama-3-8b", gpu="rtx-4090", gpu_memory_utilization=0.66))
    assert "out of memory" in str(info.value)


def test_max_model_len_beyond_kv_capacity() -> None:
    with pytest.raises(OutOfMemoryError, match="estimated maximum model length is") as info:
        build(SimConfig(model="llama-3.1-8b", gpu="rtx-4090"))
    assert str(info.value).startswith("ValueError:")
    assert build(SimConfig(model="llama-3.1-8b", gpu="rtx-4090", max_model_len=16384)).max_model_len == 16384


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (SimConfig(model="qwen2.5-7b", tensor_parallel_size=8), r"attention heads \(28\) must be divisible"),
        (SimConfig(tensor_parallel_size=16), "single node"),
        (
            SimConfig(max_num_seqs=512, max_num_batched_tokens=256),
            r"must be greater than or equal to max_num_seqs",
        ),
        (
            SimConfig(enable_chunked_prefill=False, max_num_batched_tokens=2048),
            r"max_num_batched_tokens \(2048\) is smaller than max_model_len \(8192\)",
        ),
        (SimConfig(max_model_len=9000), r"greater than the derived max_model_len"),
    ],
)
def test_vllm_configuration_errors(config: SimConfig, message: str) -> None:
    with pytest.raises(StartupError, match=message):
        build(config)


def test_defaults_follow_vllm() -> None:
    setup = build(SimConfig(model="qwen2.5-7b"))
    assert setup.max_model_len == find_model("qwen2.5-7b").max_position_embeddings
    assert setup.max_num_batched_tokens == 8192
    no_chunk = build(SimConfig(model="qwen2.5-7b", enable_chunked_prefill=False))
    assert no_chunk.max_num_batched_tokens == no_chunk.max_model_len == 32768


def test_startup_time_grows_with_weights_and_is_zero_without_cost() -> None:
    small = build(SimConfig(model="llama-3.2-1b")).startup_seconds
    big = build(SimConfig(model="llama-3-70b", tensor_parallel_size=4)).startup_seconds
    assert 1.0 < small < big < 30.0
    assert build(SimConfig(zero_cost=True)).startup_seconds == 0.0
    assert build(SimConfig(startup_seconds=0.25)).startup_seconds == 0.25


def test_summary_says_simulated() -> None:
    summary = build(SimConfig()).summary()
    assert summary["simulated"] is True
    assert summary["memory"]["num_gpu_blocks"] > 0
