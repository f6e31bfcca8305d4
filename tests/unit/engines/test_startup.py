"""Start-up rules per engine and the memory pre-check: what each engine would refuse when it
starts, predicted from the flags, with the source named; the warnings ``validate`` gives and the
exclusions ``plan`` lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.engines import get_engine
from backends.validation import startup_warnings
from tests.unit.engines.helpers import load


def problems(engine: str, config: dict[str, object], **kwargs: object) -> list[str]:
    loaded = load(engine, **kwargs)  # type: ignore[arg-type]
    e = get_engine(engine, loaded.spec.spec.engine.variant)
    return [r.message for r in e.startup_problems(loaded.spec, config)]  # type: ignore[arg-type]


def test_vllm_batched_tokens_against_model_length_without_chunked_prefill() -> None:
    params = {
        "max-num-batched-tokens": {"values": [2048, 8192]},
        "enable-chunked-prefill": {"values": [True, False]},
    }
    args = {"max-model-len": 4096}
    [message] = problems(
        "vllm",
        {"max-num-batched-tokens": 2048, "enable-chunked-prefill": False},
        args=args,
        parameters=params,
    )
    assert "max-num-batched-tokens (2048) below max-model-len (4096)" in message
    assert "vllm/config/scheduler.py" in message
    assert not problems(
        "vllm", {"max-num-batched-tokens": 2048, "enable-chunked-prefill": True}, args=args, parameters=params
    )
    assert not problems(
        "vllm",
        {"max-num-batched-tokens": 8192, "enable-chunked-prefill": False},
        args=args,
        parameters=params,
    )


def test_vllm_batched_tokens_against_max_num_seqs() -> None:
    params = {"max-num-batched-tokens": {"values": [128, 8192]}, "max-num-seqs": {"values": [256]}}
    [message] = problems("vllm", {"max-num-batched-tokens": 128, "max-num-seqs": 256}, parameters=params)
    assert "below max-num-seqs (256)" in message


def test_sglang_chunked_prefill_is_a_multiple_of_the_page_size() -> None:
    params = {"chunked-prefill-size": {"values": [4000, 4096]}}
    [message] = problems("sglang", {"chunked-prefill-size": 4000}, args={"page-size": 64}, parameters=params)
    assert "not a multiple of page-size 64" in message and "server_args.py" in message
    assert not problems("sglang", {"chunked-prefill-size": 4096}, args={"page-size": 64}, parameters=params)
    # -1 turns chunked prefill off: no rule
    assert not problems("sglang", {"chunked-prefill-size": -1}, args={"page-size": 64}, parameters=params)


def test_trtllm_max_num_tokens_holds_one_token_per_sequence() -> None:
    params = {"max_num_tokens": {"values": [64, 8192]}}
    [message] = problems("trtllm", {"max_num_tokens": 64}, args={"max_batch_size": 256}, parameters=params)
    assert "max_num_tokens (64) of at least max_batch_size (256)" in message


def test_llamacpp_quantized_v_cache_needs_flash_attention() -> None:
    # llama.cpp's rule lives with the quantization mapping (config_problems): it is a combination
    loaded = load("llamacpp", args={"flash_attn": False}, quantization={"kvcache_dtype": ["f16", "q8_0"]})
    engine = get_engine("llamacpp")
    rejected = engine.config_problems(loaded.spec, {"quant.kvcache_dtype": "q8_0"})
    assert any("flash attention" in r.message for r in rejected)


def test_memory_precheck_on_the_sim_catalogs() -> None:
    params = {"tensor-parallel-size": {"values": [1, 4]}}
    kwargs = {"args": {"gpu": "a100-80g"}, "parameters": params, "model": {"id": "llama-3-70b"}}
    [message] = problems("sim", {"tensor-parallel-size": 1}, **kwargs)
    assert "does not fit in GPU memory" in message and "while loading weights" in message
    assert not problems("sim", {"tensor-parallel-size": 4}, **kwargs)
    # vLLM gets the same check once the GPU is known, and none for a model outside the catalogs
    vllm = load("vllm", parameters=params, model={"id": "meta-llama/Meta-Llama-3-70B-Instruct"})
    engine = get_engine("vllm")
    assert engine.startup_problems(vllm.spec, {"tensor-parallel-size": 1}, gpu="a100-80g")
    assert not engine.startup_problems(vllm.spec, {"tensor-parallel-size": 4}, gpu="a100-80g")
    other = load("vllm", parameters=params, model={"id": "someone/unknown-model"})
    assert not engine.startup_problems(other.spec, {"tensor-parallel-size": 1}, gpu="a100-80g")


def test_validate_warns_with_the_share_of_the_space_excluded() -> None:
    loaded = load(
        "sim",
        args={"gpu": "h100", "max-model-len": 4096},
        parameters={
            "max-num-batched-tokens": {"values": [1024, 2048, 4096, 8192]},
            "enable-chunked-prefill": {"values": [True, False]},
        },
    )
    [warning] = startup_warnings(loaded)
    assert warning.file == "test.yaml" and warning.line is not None
    assert warning.message.startswith("2 of 8 configurations would be refused at start-up")
    assert "the search skips them" in warning.message


def test_plan_lists_the_excluded_configurations_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.cli import main

    spec = tmp_path / "big.yaml"
    spec.write_text(
        """\
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {name: big}
spec:
  model: {id: llama-3-70b}
  engine: {name: sim, args: {gpu: a100-80g}}
  search:
    maxExperiments: 4
    parameters:
      tensor-parallel-size: {values: [1, 4]}
      max-num-seqs: {values: [64, 128]}
  workload:
    dataset: {kind: synthetic, input: {mean: 100}, output: {mean: 10}}
    load: {concurrency: [1]}
  objectives:
    - {metric: output_throughput_per_gpu, direction: maximize}
"""
    )
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "excluded by start-up rules or the memory pre-check (never run): 2" in out, out
    excluded = out.split("(never run): 2", 1)[1].splitlines()[1:3]
    assert all(line.startswith("  - tensor-parallel-size=1, max-num-seqs=") for line in excluded), excluded
    assert all("does not fit in GPU memory" in line for line in excluded), excluded
