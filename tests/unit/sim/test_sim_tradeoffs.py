"""The trade-offs real engines show must come out of the model (simulated time, no HTTP).

Each test compares two configurations under the same closed-loop workload; the numbers are
whatever the model computes, only their order is asserted.
"""

from __future__ import annotations

from backends.sim import SimConfig, build
from backends.sim.offline import Item, OfflineResult, run_closed_loop


def run(concurrency: int, items: list[Item], **config: object) -> OfflineResult:
    return run_closed_loop(build(SimConfig(**config)), items, concurrency)  # type: ignore[arg-type]


def chat_items(n: int, prompt: int = 512, output: int = 128) -> list[Item]:
    return [Item(prompt, output) for _ in range(n)]


def test_more_sequences_more_throughput_worse_tpot() -> None:
    items = chat_items(512)
    few = run(256, items, max_num_seqs=32)
    many = run(256, items, max_num_seqs=256)
    assert many.output_throughput > 1.5 * few.output_throughput
    assert many.summary()["tpot_mean_ms"] > few.summary()["tpot_mean_ms"]
    assert few.max_running <= 32 < many.max_running


def test_fp8_kv_cache_holds_more_and_preempts_less_under_memory_pressure() -> None:
    # long contexts on a small card: the KV cache, not max-num-seqs, limits the batch
    items = chat_items(96, prompt=3000, output=300)
    small = {"model": "llama-3.2-1b", "gpu": "rtx-4090", "gpu_memory_utilization": 0.3, "max_model_len": 8192}
    auto = run(64, items, kv_cache_dtype="auto", **small)
    fp8 = run(64, items, kv_cache_dtype="fp8", **small)
    assert auto.preemptions > fp8.preemptions
    assert fp8.max_running > auto.max_running
    assert fp8.output_throughput > auto.output_throughput


def test_tensor_parallel_lowers_latency_and_per_gpu_throughput() -> None:
    single = chat_items(4, prompt=1000, output=200)
    tp1 = run(1, single, tensor_parallel_size=1).summary()
    tp2 = run(1, single, tensor_parallel_size=2).summary()
    assert tp2["ttft_mean_ms"] < tp1["ttft_mean_ms"]
    assert tp2["tpot_mean_ms"] < tp1["tpot_mean_ms"]

    loaded = chat_items(512)
    busy1 = run(256, loaded, tensor_parallel_size=1)
    busy2 = run(256, loaded, tensor_parallel_size=2)
    assert busy2.output_throughput > busy1.output_throughput
    assert busy2.output_throughput_per_gpu < busy1.output_throughput_per_gpu


def test_prefix_caching_cuts_ttft_for_shared_prefixes() -> None:
    system = tuple(f"sys{i}" for i in range(2000))
    items = [Item(2010, 32, system + tuple(f"q{n}-{i}" for i in range(10))) for n in range(64)]
    on = run(16, items, enable_prefix_caching=True)
    off = run(16, items, enable_prefix_caching=False)
    assert on.summary()["ttft_mean_ms"] < 0.5 * off.summary()["ttft_mean_ms"]
    assert sum(r.cached_tokens for r in on.requests) > 0 == sum(r.cached_tokens for r in off.requests)


def test_faster_memory_serves_more() -> None:
    items = chat_items(256)
    h200 = run(128, items, gpu="h200").output_throughput
    h100 = run(128, items, gpu="h100").output_throughput
    a100 = run(128, items, gpu="a100-80g").output_throughput
    assert h200 > h100 > a100


def test_fp8_weights_decode_faster_at_low_load() -> None:
    items = chat_items(8)
    bf16 = run(1, items).summary()["tpot_mean_ms"]
    fp8 = run(1, items, quantization="fp8").summary()["tpot_mean_ms"]
    assert fp8 < 0.7 * bf16


def test_moe_decodes_faster_than_a_dense_model_of_its_size() -> None:
    items = chat_items(4)
    moe = run(1, items, model="mixtral-8x7b", tensor_parallel_size=2).summary()["tpot_mean_ms"]
    dense = run(1, items, model="llama-3-70b", tensor_parallel_size=2).summary()["tpot_mean_ms"]
    assert moe < 0.5 * dense
