"""``check_spec``: every engine-level problem of a schema-valid spec, located at its YAML line."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.engines import get_engine
from backends.engines import parallel as par
from backends.validation import check_flag_paths, check_spec
from specs.errors import SpecError, SpecProblem
from specs.loader import load_spec, load_spec_text
from specs.model import QUANT_PRESETS
from specs.space import grid
from tests.conftest import EXAMPLES
from tests.unit.engines.helpers import spec_dict


def spec_text(
    engine: str, search: str, *, model: str = "org/model", args: str = "{}", backend: str = "{kind: local}"
) -> str:
    """A spec whose ``search`` block starts on line 13 (parameters) for stable line numbers."""
    head = textwrap.dedent(
        f"""\
        apiVersion: autotuner/v1
        kind: TuningSpec
        metadata:
          name: t
        spec:
          model: {{id: {model}}}
          engine:
            name: {engine}
            args: {args}
          backend: {backend}
          search:
            strategy: tpe
        """
    )
    tail = (
        "  workload:\n"
        "    dataset: {kind: synthetic, input: {mean: 128}, output: {mean: 32}}\n"
        "    load: {concurrency: [1]}\n"
    )
    return head + textwrap.indent(textwrap.dedent(search), "    ") + tail


def check(text: str) -> list[SpecProblem]:
    return check_spec(load_spec_text(text, file="spec.yaml"))


def only(problems: list[SpecProblem], needle: str) -> SpecProblem:
    hits = [p for p in problems if needle in p.message]
    assert len(hits) == 1, [str(p) for p in problems]
    return hits[0]


# --------------------------------------------------------------------------------------------- flags


def test_unknown_flag_names_the_closest_real_one() -> None:
    problems = check(spec_text("vllm", "parameters:\n  max-num-batched-tkens: {values: [2048]}\n"))
    [p] = problems
    assert (p.line, p.path) == (14, "spec.search.parameters.max-num-batched-tkens")
    assert "did you mean 'max-num-batched-tokens'?" in p.message and "vLLM 0.11.1" in p.message


def test_unknown_fixed_flag_in_engine_args() -> None:
    [p] = check(spec_text("sglang", "parameters: {}\n", args="{mem-fraction: 0.8}"))
    assert (p.line, p.path) == (9, "spec.engine.args.mem-fraction")
    assert "did you mean 'mem-fraction-static'?" in p.message


def test_flag_names_are_matched_with_dashes_or_underscores_per_engine() -> None:
    assert check(spec_text("trtllm", "parameters:\n  max-batch-size: {values: [64]}\n")) == []
    assert check(spec_text("vllm", "parameters:\n  max_num_seqs: {values: [64]}\n")) == []


def test_value_of_the_wrong_type_is_located_at_the_value() -> None:
    [p] = check(spec_text("vllm", "parameters:\n  max-num-seqs:\n    values:\n      - 64\n      - lots\n"))
    assert (p.line, p.path) == (17, "spec.search.parameters.max-num-seqs.values[1]")
    assert "takes a whole number (int), got 'lots'" in p.message


def test_value_outside_the_choices() -> None:
    [p] = check(spec_text("sglang", "parameters:\n  schedule-policy: {values: [lpm, fifo]}\n"))
    assert p.path == "spec.search.parameters.schedule-policy.values[1]"
    assert "not a choice of --schedule-policy" in p.message and "fcfs" in p.message


def test_boolean_flags_need_booleans() -> None:
    [p] = check(spec_text("vllm", "parameters:\n  enable-prefix-caching: {values: ['yes', false]}\n"))
    assert "boolean flag" in p.message and p.path.endswith("values[0]")


@pytest.mark.parametrize(
    ("param", "needle"),
    [
        ("schedule-policy: {low: 1, high: 4}", "a low/high range needs a number flag"),
        ("max-running-requests: {low: 1.5, high: 64}", "whole numbers"),
    ],
)
def test_ranges_need_number_flags(param: str, needle: str) -> None:
    [p] = check(spec_text("sglang", f"parameters:\n  {param}\n"))
    assert needle in p.message and p.line == 14


def test_a_range_must_stay_inside_the_choices() -> None:
    [p] = check(spec_text("vllm", "parameters:\n  block-size: {low: 8, high: 32, step: 8}\n"))
    assert "24" in p.message and "choices" in p.message


def test_flags_the_autotuner_sets_are_refused() -> None:
    [p] = check(spec_text("vllm", "parameters: {}\n", args="{port: 8001}"))
    assert "port is chosen by the autotuner" in p.message and p.path == "spec.engine.args.port"
    [p] = check(spec_text("sglang", "parameters:\n  model-path: {values: [a, b]}\n"))
    assert "spec.model.id" in p.message


def test_model_settings_the_engine_cannot_express() -> None:
    text = spec_text("trtllm", "parameters: {}\n", model="org/m, servedName: chat")
    [p] = check(text)
    assert p.path == "spec.model.servedName" and p.line == 6


# --------------------------------------------------------------------------------------------- rules


def test_trtllm_data_parallel_value_is_located() -> None:
    [p] = check(spec_text("trtllm", "parameters: {}\nparallel:\n  dp: [1, 2]\n"))
    assert (p.line, p.path) == (15, "spec.search.parallel.dp[1]")
    assert "no data parallelism" in p.message


def test_sglang_dp_attention_combination() -> None:
    problems = check(spec_text("sglang", "parameters: {}\nparallel: {tp: 2, dp: 4, dp_attention: true}\n"))
    rule = only(problems, "tp divisible by dp")
    assert rule.path == "spec.search.parallel.tp" and rule.line == 14
    summary = only(problems, "search space is empty")
    assert "the only combination" in summary.message and summary.path == "spec.search"


def test_a_value_that_works_with_some_settings_is_not_an_error() -> None:
    # tp=2 fails with dp=4 under dp-attention but works with dp=2: the study skips the bad pair
    assert (
        check(spec_text("sglang", "parameters: {}\nparallel: {tp: [2, 4], dp: [2, 4], dp_attention: true}\n"))
        == []
    )


def test_vllm_unsupported_kv_dtype_value_is_located() -> None:
    [p] = check(spec_text("vllm", "parameters: {}\nquantization:\n  kvcache_dtype: [auto, int3]\n"))
    assert (p.line, p.path) == (15, "spec.search.quantization.kvcache_dtype[1]")
    assert "kvcache_dtype 'int3'" in p.message


def test_unknown_parallel_preset_for_the_engine() -> None:
    [p, summary] = sorted(
        check(spec_text("trtllm", "parameters: {}\nparallel: {preset: balanced}\n")), key=str
    )
    assert "unknown parallel preset 'balanced' for TensorRT-LLM" in str(p) or "unknown parallel" in str(
        summary
    )


def test_parallel_flag_given_twice() -> None:
    problems = check(
        spec_text("vllm", "parameters:\n  tensor-parallel-size: {values: [1, 2]}\nparallel: {tp: [1, 2]}\n")
    )
    p = only(problems, "both set the tensor parallelism")
    assert p.path == "spec.search.parameters.tensor-parallel-size" and p.line == 14


def test_quantization_flag_given_twice() -> None:
    problems = check(
        spec_text("sim", "parameters: {}\nquantization: {kvcache_dtype: fp8}\n", args="{kv-cache-dtype: fp8}")
    )
    p = only(problems, "set both as an engine flag and by quantization.kvcache_dtype")
    assert p.path == "spec.engine.args.kv-cache-dtype"


def test_more_gpus_than_the_backend_has() -> None:
    problems = check(
        spec_text(
            "vllm", "parameters: {}\nparallel:\n  tp: [1, 2, 4]\n", backend="{kind: local, gpus: [0, 1]}"
        )
    )
    [p] = problems
    assert (p.line, p.path) == (15, "spec.search.parallel.tp[2]")
    assert "needs 4 GPUs" in p.message and "allows 2" in p.message


def test_simulated_gpus_are_not_limited_by_the_backend() -> None:
    text = spec_text(
        "sim", "parameters: {}\nparallel: {tp: 4}\n", args="{gpu: h100}", backend="{kind: local, gpus: 1}"
    )
    assert check(text) == []


def test_constraints_that_exclude_everything() -> None:
    text = spec_text(
        "vllm", "parameters:\n  max-num-seqs: {values: [16, 32]}\nconstraints: ['max-num-seqs > 1000']\n"
    )
    [p] = check(text)
    assert p.path == "spec.search.constraints[0]" and p.line == 15
    assert (
        p.message
        == "the search space is empty: the constraints exclude all 2 combinations of max-num-seqs tried"
    )


def test_problems_with_fixed_args_only() -> None:
    [p, summary] = check(
        spec_text("sglang", "parameters: {}\n", args="{tp-size: 8}", backend="{kind: local, gpus: 2}")
    )
    assert "needs 8 GPUs" in p.message and p.path == "spec.backend.gpus"
    assert "search space is empty" in summary.message


# --------------------------------------------------------------------------------------------- whole specs


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_are_valid_and_launch(path: Any) -> None:
    loaded = load_spec(path)
    assert check_spec(loaded) == []
    body = loaded.spec.spec
    engine = get_engine(body.engine.name, body.engine.variant)
    for config in grid(loaded.spec, limit=50):
        plan = engine.launch(loaded.spec, config, host="0.0.0.0", port=8000)
        assert all(engine.flags.get(a[2:].removeprefix("no-")) for a in plan.argv if a.startswith("--"))


def test_plan_prints_sglang_command_lines_whose_flags_are_all_in_the_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from reconciler.cli import main

    assert main(["plan", str(EXAMPLES / "sglang-quant-parallel.yaml"), "-n", "8"]) == 0
    out = [ln.strip() for ln in capsys.readouterr().out.splitlines()]
    lines = [ln for ln in out if ln.startswith("python3 -m sglang.launch_server")]
    assert len(lines) == 8
    # the spec runs on docker: each command line also shown as its container, the image's
    # command being SGLang's launcher with the same arguments
    containers = [ln for ln in out if ln.startswith("in a container: docker run ")]
    assert len(containers) == 8
    for line, container in zip(lines, containers, strict=True):
        assert container.endswith(" lmsysorg/sglang:v0.5.2-cu126 " + line), container
    table = get_engine("sglang").flags
    for line in lines:
        flags = [a for a in shlex.split(line) if a.startswith("--")]
        assert flags
        for flag in flags:
            info = table.get(flag[2:])
            assert info is not None and "--" + info.name == flag, (flag, line)


_ENGINES = ["vllm", "sglang", "trtllm", "llamacpp", "sim"]
_SCALARS = st.one_of(
    st.integers(-2, 70000),
    st.floats(0, 2, allow_nan=False),
    st.booleans(),
    st.sampled_from(["fp8", "lpm", "x", "auto"]),
)


@st.composite
def _specs(draw: st.DrawFn) -> dict[str, Any]:
    engine = draw(st.sampled_from(_ENGINES))
    table = get_engine(engine).flags
    names = [*sorted(table.flags), "max-num-seq", "n_thread", "tp"]
    params = {
        name: {"values": draw(st.lists(_SCALARS, min_size=1, max_size=3, unique_by=repr))}
        for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    }
    quant_values = ["auto", "fp8", "fp8_e5m2", "int8", "q8_0", "bfloat16", "int3"]
    quantization = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"preset": st.lists(st.sampled_from(QUANT_PRESETS), min_size=1, max_size=2, unique=True)}
            ),
            st.fixed_dictionaries(
                {
                    "kvcache_dtype": st.lists(
                        st.sampled_from(quant_values), min_size=1, max_size=2, unique=True
                    ),
                    "gemm_dtype": st.sampled_from(quant_values),
                }
            ),
        )
    )
    fields = ["tp", "pp", "dp", "ep", "cp", "dcp", "moe_tp", "moe_ep", "moe_dense_tp"]
    presets = [*sorted({p for e in par.ENGINES.values() for p in e.presets}), "bogus"]
    parallel: dict[str, Any] | None = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries({"preset": st.sampled_from(presets)}),
            st.dictionaries(
                st.sampled_from(fields),
                st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=2, unique=True),
                max_size=3,
            ),
        )
    )
    if parallel is not None and draw(st.booleans()):
        parallel["dp_attention"] = draw(st.booleans())
    args = {draw(st.sampled_from(names)): draw(_SCALARS)} if draw(st.booleans()) else {}
    gpus = draw(st.one_of(st.just("auto"), st.integers(0, 8)))
    return spec_dict(
        engine,
        args=args if engine != "sim" else {"gpu": "h100", **args},
        parameters=params,
        quantization=quantization,
        parallel=parallel,
        backend={"kind": "local", "gpus": gpus},
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs())
def test_check_spec_never_raises_on_a_schema_valid_spec(data: dict[str, Any]) -> None:
    try:
        loaded = load_spec_text(yaml.safe_dump(data), file="fuzz.yaml")
    except SpecError:
        return  # not schema-valid: the loader's business
    problems = check_spec(loaded)
    for p in problems:
        assert p.file == "fuzz.yaml" and p.message and len(p.message) < 400
    if not problems:
        body = loaded.spec.spec
        engine = get_engine(body.engine.name, body.engine.variant)
        for config in grid(loaded.spec, limit=20):
            if not engine.config_problems(loaded.spec, config):
                engine.launch(loaded.spec, config, host="127.0.0.1", port=8000)


def test_path_flags_stay_inside_the_roots(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "tok").mkdir(parents=True)
    (repo / "escape").symlink_to("/etc")
    text = (EXAMPLES / "sglang-quant-parallel.yaml").read_text()
    for value, ok in (("tok", True), ("/etc", False), ("../..", False), ("escape", False)):
        loaded = load_spec_text(
            text.replace("{context-length: 8192}", f"{{tokenizer-path: '{value}'}}"), "s.yaml"
        )
        problems = check_flag_paths(loaded, [repo], repo)
        assert (problems == []) == ok, (value, problems)
        if not ok:
            assert (
                problems[0].path == "spec.engine.args.tokenizer-path" and "dataRoots" in problems[0].message
            )
