"""The flags: vLLM's names, defaults, and usage errors for malformed values."""

from __future__ import annotations

import pytest

from backends.sim import SimConfig, build_parser, parse_config


def test_vllm_flag_names_map_onto_the_config() -> None:
    config = parse_config(
        [
            "--model", "Qwen/Qwen2.5-7B-Instruct",
            "--gpu", "L40S",
            "--max-num-seqs", "64",
            "--max-num-batched-tokens", "4096",
            "--gpu-memory-utilization", "0.85",
            "--tensor-parallel-size", "2",
            "--kv-cache-dtype", "fp8_e5m2",
            "--quantization", "awq",
            "--no-enable-chunked-prefill",
            "--no-enable-prefix-caching",
            "--block-size", "32",
            "--max-model-len", "4096",
            "--dtype", "bfloat16",
            "--seed", "7",
            "--time-scale", "20",
            "--startup-seconds", "0",
            "--port", "0",
            "--served-model-name", "qwen",
        ]
    )  # fmt: skip
    assert config == SimConfig(
        model="Qwen/Qwen2.5-7B-Instruct",
        gpu="L40S",
        host="127.0.0.1",
        port=0,
        served_model_name="qwen",
        max_num_seqs=64,
        max_num_batched_tokens=4096,
        gpu_memory_utilization=0.85,
        tensor_parallel_size=2,
        kv_cache_dtype="fp8_e5m2",
        quantization="awq",
        enable_chunked_prefill=False,
        enable_prefix_caching=False,
        block_size=32,
        max_model_len=4096,
        dtype="bfloat16",
        seed=7,
        time_scale=20.0,
        startup_seconds=0.0,
    )
    assert config.model_name == "qwen"


def test_defaults() -> None:
    config = parse_config([])
    assert config == SimConfig()
    assert (config.max_num_seqs, config.gpu_memory_utilization, config.block_size) == (256, 0.9, 16)
    assert config.enable_chunked_prefill and config.enable_prefix_caching
    assert config.model_name == "llama-3-8b"
    faults = parse_config(
        ["--fault", "crash-after-requests", "--fault-after", "3", "--zero-cost", "--emit-timestamps"]
    )
    assert (faults.fault, faults.fault_after, faults.zero_cost, faults.emit_timestamps) == (
        "crash-after-requests",
        3,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "llama-3-8"], "argument --model: unknown model 'llama-3-8'; did you mean"),
        (["--gpu", "tpu"], "argument --gpu: unknown gpu 'tpu'"),
        (["--max-num-seqs", "0"], "'0' is not a positive integer"),
        (["--gpu-memory-utilization", "1.5"], "'1.5' is not a fraction in (0, 1]"),
        (["--time-scale", "-1"], "'-1' is not a positive number"),
        (["--kv-cache-dtype", "int4"], "invalid choice: 'int4'"),
        (["--port", "70000"], "not a port number"),
        (["--block-size", "12"], "invalid choice: 12"),
    ],
)
def test_malformed_values_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_choices_are_case_insensitive_like_catalog_names() -> None:
    assert parse_config(["--kv-cache-dtype", "FP8", "--quantization", "AWQ"]).kv_cache_dtype == "fp8"
