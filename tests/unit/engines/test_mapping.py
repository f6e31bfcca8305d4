"""Per-engine mapping: what each quantization and parallel setting becomes, and what is refused."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import yaml

from backends.engines import get_engine
from backends.engines.quantization import PRESETS
from specs.errors import ConfigRejected
from specs.model import QUANT_PRESETS
from tests.unit.engines.helpers import load


def argv(
    engine_name: str, config: dict[str, Any] | None = None, variant: str | None = None, **spec: Any
) -> list[str]:
    engine = get_engine(engine_name, variant)
    return engine.launch(load(engine_name, variant=variant, **spec).spec, config or {}, host="h", port=1).argv


def value_of(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def problems(engine_name: str, config: dict[str, Any], variant: str | None = None, **spec: Any) -> list[str]:
    engine = get_engine(engine_name, variant)
    return [
        r.message for r in engine.config_problems(load(engine_name, variant=variant, **spec).spec, config)
    ]


# --------------------------------------------------------------------------------------------- quantization


def test_the_quantization_presets_are_the_schema_presets() -> None:
    assert tuple(PRESETS) == QUANT_PRESETS


def test_every_quantization_preset_changes_the_vllm_command_line() -> None:
    baseline = argv("vllm")
    seen = {tuple(baseline)}
    for preset in QUANT_PRESETS:
        args = argv("vllm", {"quant.preset": preset})
        if preset == "default":
            assert args == baseline  # the engine's own defaults: nothing to add
            continue
        assert tuple(args) not in seen, f"preset {preset} gives the same command line as another"
        seen.add(tuple(args))
    assert value_of(argv("vllm", {"quant.preset": "kv-cache-fp8"}), "--kv-cache-dtype") == "fp8"
    dynamic = argv("vllm", {"quant.preset": "dynamic-fp8"})
    assert value_of(dynamic, "--quantization") == "fp8" and value_of(dynamic, "--kv-cache-dtype") == "fp8"
    assert value_of(argv("vllm", {"quant.preset": "bf16-stable"}), "--dtype") == "bfloat16"
    assert value_of(argv("vllm", {"quant.preset": "aggressive-moe"}), "--quantization") == "experts_int8"


def test_explicit_fields_override_the_preset() -> None:
    args = argv("vllm", {"quant.preset": "kv-cache-fp8", "quant.kvcache_dtype": "fp8_e5m2"})
    assert value_of(args, "--kv-cache-dtype") == "fp8_e5m2"


@pytest.mark.parametrize("dtype", ["int8", "int4", "q8_0", "fp4_e2m1"])
def test_vllm_rejects_kv_cache_dtypes_it_does_not_support(dtype: str) -> None:
    engine = get_engine("vllm")
    loaded = load("vllm", quantization={"kvcache_dtype": ["auto", dtype]})
    [message] = [r.message for r in engine.config_problems(loaded.spec, {"quant.kvcache_dtype": dtype})]
    assert f"kvcache_dtype {dtype!r}" in message and "fp8_e5m2" in message
    with pytest.raises(ConfigRejected, match="kvcache_dtype"):
        engine.launch(loaded.spec, {"quant.kvcache_dtype": dtype}, host="h", port=1)


def test_vllm_cannot_combine_two_quantization_methods() -> None:
    [message] = problems("vllm", {"quant.gemm_dtype": "fp8", "quant.moe_dtype": "int8"})
    assert "one --quantization method" in message
    [message] = problems("vllm", {"quant.moe_dtype": "fp8"})
    assert "experts alone" in message
    assert (
        value_of(argv("vllm", {"quant.attention_dtype": "float32"}), "--override-attention-dtype")
        == "float32"
    )


def test_sglang_maps_fp8_kv_cache_to_its_own_spelling_and_has_no_attention_dtype() -> None:
    assert value_of(argv("sglang", {"quant.kvcache_dtype": "fp8"}), "--kv-cache-dtype") == "fp8_e4m3"
    assert value_of(argv("sglang", {"quant.kvcache_dtype": "fp8_e5m2"}), "--kv-cache-dtype") == "fp8_e5m2"
    assert value_of(argv("sglang", {"quant.gemm_dtype": "fp8"}), "--quantization") == "fp8"
    assert value_of(argv("sglang", {"quant.gemm_dtype": "int8"}), "--torchao-config") == "int8dq"
    [message] = problems("sglang", {"quant.attention_dtype": "fp8"})
    assert "no attention dtype" in message
    assert "--attention-backend" not in argv("sglang", {"quant.preset": "dynamic-fp8"})


def test_trtllm_writes_what_its_cli_lacks_into_the_llm_api_file() -> None:
    engine = get_engine("trtllm")
    loaded = load("trtllm", args={"kv_cache_free_gpu_memory_fraction": 0.8})
    plan = engine.launch(
        loaded.spec, {"quant.kvcache_dtype": "fp8", "parallel.tp": 2, "parallel.cp": 2}, host="h", port=1
    )
    assert value_of(plan.argv, "--extra_llm_api_options") == "extra_llm_api_options.yaml"
    options = yaml.safe_load(plan.files["extra_llm_api_options.yaml"])
    # the file's kv_cache_config replaces the one built from the flags, so the fraction is carried over
    assert options == {
        "kv_cache_config": {"dtype": "fp8", "free_gpu_memory_fraction": 0.8},
        "context_parallel_size": 2,
    }
    assert plan.gpus == 4
    plain = engine.launch(loaded.spec, {}, host="h", port=1)
    assert plain.files == {} and "--extra_llm_api_options" not in plain.argv


def test_trtllm_refuses_online_fp8_weights_on_the_pytorch_backend() -> None:
    [message] = problems("trtllm", {"quant.gemm_dtype": "fp8"})
    assert "does not quantize online" in message
    # dynamic-fp8 also asks for fp8 experts, which TensorRT-LLM takes from the checkpoint
    [message] = problems("trtllm", {"quant.preset": "dynamic-fp8"}, args={"backend": "tensorrt"})
    assert "moe_dtype must be auto" in message


def test_trtllm_tensorrt_backend_quantizes_through_quant_config() -> None:
    engine = get_engine("trtllm")
    loaded = load("trtllm", args={"backend": "tensorrt"})
    plan = engine.launch(
        loaded.spec, {"quant.gemm_dtype": "fp8", "quant.kvcache_dtype": "fp8"}, host="h", port=1
    )
    options = yaml.safe_load(plan.files["extra_llm_api_options.yaml"])
    assert options == {"quant_config": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}}


def test_trtllm_refuses_its_own_options_file_next_to_generated_options() -> None:
    messages = problems("trtllm", {"quant.kvcache_dtype": "fp8"}, args={"extra_llm_api_options": "mine.yaml"})
    assert any("given directly" in m for m in messages)
    assert (
        value_of(argv("trtllm", args={"extra_llm_api_options": "mine.yaml"}), "--extra_llm_api_options")
        == "mine.yaml"
    )


def test_llamacpp_kv_cache_types_and_flash_attention() -> None:
    args = argv("llamacpp", {"quant.kvcache_dtype": "q8_0"})
    assert value_of(args, "--type_k") == "8" and value_of(args, "--type_v") == "8"
    assert value_of(args, "--flash_attn") == "true"  # llama.cpp needs it for a quantized V cache
    native = argv("llamacpp", {"quant.kvcache_dtype": "bf16"}, variant="native")
    assert value_of(native, "--cache-type-k") == "bf16" and "--flash-attn" not in native
    [message] = problems("llamacpp", {"quant.kvcache_dtype": "q4_0"}, args={"flash_attn": False})
    assert "flash attention" in message
    [message] = problems("llamacpp", {"quant.kvcache_dtype": "fp8"})
    assert "no fp8 KV cache" in message
    [message] = problems("llamacpp", {"quant.gemm_dtype": "int8"})
    assert "GGUF" in message


def test_a_flag_set_directly_and_by_quantization_is_refused() -> None:
    messages = problems("vllm", {"quant.preset": "kv-cache-fp8"}, args={"kv-cache-dtype": "fp8_e5m2"})
    assert messages == [
        "--kv-cache-dtype is set both as an engine flag and by quantization.kvcache_dtype: give it in one "
        "place"
    ]
    assert problems("vllm", {"quant.preset": "default"}, args={"kv-cache-dtype": "fp8_e5m2"}) == []


# --------------------------------------------------------------------------------------------- parallel


def test_trtllm_has_no_data_parallelism() -> None:
    [message] = problems("trtllm", {"parallel.dp": 2})
    assert "no data parallelism" in message
    assert problems("trtllm", {"parallel.dp": 1}) == []
    engine = get_engine("trtllm")
    plan = engine.launch(
        load("trtllm").spec, {"parallel.tp": 4, "parallel.dp_attention": True}, host="h", port=1
    )
    assert yaml.safe_load(plan.files["extra_llm_api_options.yaml"]) == {"enable_attention_dp": True}
    assert plan.gpus == 4  # attention DP lives inside the tp GPUs


def test_sglang_tp_divisible_by_dp_only_with_dp_attention() -> None:
    engine = get_engine("sglang")
    spec = load("sglang").spec
    assert engine.config_problems(spec, {"parallel.tp": 2, "parallel.dp": 4}) == []
    assert engine.gpus_for(spec, {"parallel.tp": 2, "parallel.dp": 4}) == 8  # dp replicas of tp GPUs each
    [rejection] = engine.config_problems(
        spec, {"parallel.tp": 2, "parallel.dp": 4, "parallel.dp_attention": True}
    )
    assert "tp divisible by dp" in rejection.message
    assert set(rejection.fields) == {"parallel.tp", "parallel.dp", "parallel.dp_attention"}
    config = {"parallel.tp": 4, "parallel.dp": 2, "parallel.dp_attention": True}
    assert engine.config_problems(spec, config) == []
    assert engine.gpus_for(spec, config) == 4  # dp-attention groups share the tp GPUs
    args = engine.launch(spec, config, host="h", port=1).argv
    assert "--enable-dp-attention" in args and value_of(args, "--dp-size") == "2"
    [message] = problems("sglang", {"parallel.dp_attention": True})
    assert "needs dp > 1" in message


def test_vllm_expert_parallelism_spans_tp_times_dp() -> None:
    args = argv("vllm", {"parallel.preset": "moe-optimized"})
    assert "--enable-expert-parallel" in args
    assert value_of(args, "--tensor-parallel-size") == "2" and value_of(args, "--data-parallel-size") == "2"
    [message] = problems("vllm", {"parallel.tp": 2, "parallel.ep": 3})
    assert "tp x dp = 2" in message
    [message] = problems("vllm", {"parallel.tp": 2, "parallel.dcp": 4})
    assert "tp divisible by dcp" in message
    [message] = problems("vllm", {"parallel.cp": 2})
    assert "decode context parallelism only" in message


@pytest.mark.parametrize(
    ("engine_name", "config", "gpus"),
    [
        ("vllm", {"parallel.tp": 2, "parallel.pp": 2, "parallel.dp": 2}, 8),
        ("vllm", {"parallel.tp": 4, "parallel.dcp": 2}, 4),
        ("sglang", {"parallel.tp": 4, "parallel.pp": 2}, 8),
        ("trtllm", {"parallel.tp": 2, "parallel.pp": 2, "parallel.cp": 2}, 8),
        ("trtllm", {"parallel.tp": 4, "parallel.ep": 4, "parallel.moe_tp": 1}, 4),
        ("sim", {"parallel.tp": 4}, 4),
        ("llamacpp", {}, 0),
    ],
)
def test_gpus_per_experiment(engine_name: str, config: dict[str, Any], gpus: int) -> None:
    engine = get_engine(engine_name)
    spec = load(engine_name).spec
    assert engine.config_problems(spec, config) == []
    plan = engine.launch(spec, config, host="h", port=1)
    assert plan.gpus == gpus == engine.gpus_for(spec, config)


def test_llamacpp_needs_a_gpu_only_when_it_offloads_layers() -> None:
    engine = get_engine("llamacpp")
    assert engine.gpus_for(load("llamacpp", args={"n_gpu_layers": 0}).spec, {}) == 0
    assert engine.gpus_for(load("llamacpp", args={"n_gpu_layers": -1}).spec, {}) == 1
    native = get_engine("llamacpp", "native")
    assert native.gpus_for(load("llamacpp", variant="native", args={"ngl": 99}).spec, {}) == 1
    [message] = problems("llamacpp", {"parallel.tp": 2})
    assert "parallel.tp must be 1" in message


def test_raw_parallel_flags_count_as_parallel_settings() -> None:
    engine = get_engine("vllm")
    spec = load("vllm", parameters={"tensor-parallel-size": {"values": [1, 2]}}).spec
    assert engine.gpus_for(spec, {"tensor-parallel-size": 2}) == 2
    spec = load("sglang", parameters={"tp-size": {"values": [2]}}).spec
    sglang = get_engine("sglang")
    assert sglang.gpus_for(spec, {"tp-size": 2, "parallel.dp": 2}) == 4
    # an alias is read as the same flag and written with the canonical name
    args = sglang.launch(load("sglang", args={"tensor-parallel-size": 2}).spec, {}, host="h", port=1).argv
    assert value_of(args, "--tp-size") == "2"
    messages = problems("vllm", {"parallel.tp": 2}, args={"tensor-parallel-size": 2})
    assert messages == [
        "--tensor-parallel-size and parallel.tp both set the tensor parallelism: give it in one place"
    ]


def test_moe_ep_is_ep_where_the_engine_has_one_expert_parallel_size() -> None:
    args = argv("sglang", {"parallel.tp": 4, "parallel.moe_ep": 4})
    assert value_of(args, "--ep-size") == "4"
    [message] = problems("sglang", {"parallel.tp": 4, "parallel.moe_ep": 4, "parallel.ep": 2})
    assert "same setting" in message


# --------------------------------------------------------------------------------------------- commands


def test_engine_commands() -> None:
    assert argv("vllm")[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"]
    assert argv("sglang")[:5] == [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "Qwen/Qwen2.5-7B-Instruct",
    ]
    assert argv("trtllm")[:2] == ["trtllm-serve", "meta-llama/Llama-3.1-8B-Instruct"]
    assert argv("llamacpp")[:5] == [sys.executable, "-m", "llama_cpp.server", "--model", "./models/tiny.gguf"]
    assert argv("llamacpp", variant="native")[:3] == ["llama-server", "--model", "./models/tiny.gguf"]
    assert argv("sim")[:5] == [sys.executable, "-m", "backends.sim", "--model", "llama-3-8b"]


def test_model_settings_and_environment() -> None:
    engine = get_engine("vllm")
    loaded = load(
        "vllm",
        model={"id": "org/m", "revision": "v2", "tokenizer": "org/tok", "servedName": "chat"},
        env={"HF_TOKEN": {"fromEnv": "HF_TOKEN"}, "NCCL_DEBUG": "WARN"},
    )
    plan = engine.launch(loaded.spec, {}, host="h", port=1)
    assert value_of(plan.argv, "--revision") == "v2" and value_of(plan.argv, "--tokenizer") == "org/tok"
    assert value_of(plan.argv, "--served-model-name") == "chat" and plan.served_model == "chat"
    assert plan.env == {"VLLM_SERVER_DEV_MODE": "1", "NCCL_DEBUG": "WARN"}  # dev mode: /reset_prefix_cache
    assert plan.env_from == {"HF_TOKEN": "HF_TOKEN"}
    assert "HF_TOKEN" not in plan.env


def test_sim_gpus_are_simulated() -> None:
    plan = get_engine("sim").launch(load("sim").spec, {"parallel.tp": 2}, host="h", port=1)
    assert plan.simulated and plan.gpus == 2
    assert plan.container_args[:3] == ["autotuner", "engine", "sim"]


def test_flags_the_autotuner_owns_are_refused() -> None:
    engine = get_engine("vllm")
    with pytest.raises(ConfigRejected, match="port is chosen by the autotuner"):
        engine.launch(load("vllm", args={"port": 9}).spec, {}, host="h", port=1)
