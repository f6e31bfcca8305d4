"""The contract every engine mapping keeps (base.Engine's docstring), run against all of them."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from backends.engines import ENGINES, get_engine, load_flag_table
from backends.engines import parallel as par
from backends.engines.base import Engine, FlagTable
from backends.engines.common import TableEngine
from specs.errors import ConfigRejected
from specs.loader import LoadedSpec
from specs.model import TuningSpec
from specs.space import grid
from tests.unit.engines.helpers import load

#: (engine, variant, spec options): a representative, valid spec per engine, with booleans of
#: every style, quantization and parallelism wherever the engine has them
CASES: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "vllm": (
        "vllm",
        None,
        {
            "args": {"max-model-len": 4096, "enforce-eager": False},
            "parameters": {
                "max-num-seqs": {"values": [64, 256]},
                "enable-chunked-prefill": {"values": [True, False]},
                "gpu-memory-utilization": {"values": [0.9]},
            },
            "quantization": {"kvcache_dtype": ["auto", "fp8"]},
            "parallel": {"tp": [1, 2]},
        },
    ),
    "sglang": (
        "sglang",
        None,
        {
            "args": {"context-length": 8192},
            "parameters": {
                "mem-fraction-static": {"values": [0.85]},
                "schedule-policy": {"values": ["lpm", "fcfs"]},
                "disable-radix-cache": {"values": [True, False]},
            },
            "quantization": {"kvcache_dtype": ["fp8_e5m2"]},
            "parallel": {"tp": [4], "dp": [2], "dp_attention": [True, False]},
        },
    ),
    "trtllm": (
        "trtllm",
        None,
        {
            "args": {"max_seq_len": 8192},
            "parameters": {
                "max_batch_size": {"values": [64, 128]},
                "enable_chunked_prefill": {"values": [True]},
            },
            "quantization": {"kvcache_dtype": ["auto", "fp8"]},
            "parallel": {"tp": [2], "cp": [1, 2]},
        },
    ),
    "llamacpp-python": (
        "llamacpp",
        "python",
        {
            "args": {"n_ctx": 2048},
            "parameters": {"n_threads": {"values": [1, 2]}, "use_mlock": {"values": [True, False]}},
            "quantization": {"kvcache_dtype": ["auto", "q8_0"]},
        },
    ),
    "llamacpp-native": (
        "llamacpp",
        "native",
        {
            "args": {"ctx-size": 2048},
            "parameters": {"threads": {"values": [2]}, "cont-batching": {"values": [True, False]}},
            "quantization": {"kvcache_dtype": ["q4_0"]},
        },
    ),
    "sim": (
        "sim",
        None,
        {
            "args": {"gpu": "h100", "time-scale": 20},
            "parameters": {
                "max-num-seqs": {"values": [16, 64]},
                "enable-prefix-caching": {"values": [True, False]},
            },
            "quantization": {"preset": ["default", "kv-cache-fp8"]},
            "parallel": {"tp": [1, 2]},
        },
    ),
}

TABLES = ["vllm", "sglang", "trtllm", "llamacpp", "llamacpp-native", "sim"]


def engine_and_spec(case: str) -> tuple[Engine, LoadedSpec]:
    name, variant, options = CASES[case]
    loaded = load(name, variant=variant, **options)
    return get_engine(name, variant), loaded


def flag_tokens(table: FlagTable) -> set[str]:
    """Every ``--token`` the engine accepts according to its table."""
    out = set()
    for info in table.flags.values():
        out.add("--" + info.name)
        if info.type == "bool" and info.bool_style == "optional":
            out.add("--no" + table.separator + info.name)
    return out


def configs(spec: TuningSpec) -> list[dict[str, Any]]:
    return [dict(c) for c in grid(spec)]


# --------------------------------------------------------------------------------------------- flag tables


@pytest.mark.parametrize("table_name", TABLES)
def test_flag_table_is_well_formed(table_name: str) -> None:
    raw = json.loads(resources.files("backends.engines").joinpath("flags", f"{table_name}.json").read_text())
    assert set(raw) >= {"engine", "version", "source", "separator", "flags"}
    table = load_flag_table(table_name)
    assert table.version and table.source and table.separator in ("-", "_")
    assert 20 <= len(table.flags) <= 120
    seen: set[str] = set()
    for info in table.flags.values():
        assert info.type in ("int", "float", "str", "bool", "path", "json"), info
        assert (info.type == "bool") == (info.bool_style is not None), info.name
        assert info.help, f"{info.name} has no help text"
        other = "_" if table.separator == "-" else "-"
        assert other not in info.name, f"{info.name} is not spelled with {table.separator!r}"
        for choice in info.choices or ():
            expected = {"int": int, "float": float}.get(info.type, str)
            assert isinstance(choice, expected) and not isinstance(choice, bool), (info.name, choice)
        for spelling in (info.name, *info.aliases):
            key = table.key(spelling)
            assert key not in seen, f"{spelling} is listed twice in {table_name}"
            seen.add(key)
            assert table.get(spelling) is info


def test_every_engine_of_the_schema_has_a_mapping() -> None:
    from specs.model import ENGINES as SCHEMA_ENGINES

    assert set(ENGINES) == set(SCHEMA_ENGINES)


# --------------------------------------------------------------------------------------------- launch


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_emitted_flag_is_in_the_engine_table(case: str) -> None:
    engine, loaded = engine_and_spec(case)
    assert engine.check(loaded) == []
    allowed = flag_tokens(engine.flags)
    points = configs(loaded.spec)
    assert points
    for config in points:
        plan = engine.launch(loaded.spec, config, host="127.0.0.1", port=8123)
        assert isinstance(plan.argv, list) and all(isinstance(a, str) for a in plan.argv)
        flags = [a for a in plan.argv if a.startswith("--")]
        assert flags, plan.argv
        unknown = [f for f in flags if f not in allowed]
        assert not unknown, f"{case}: {unknown} are not in flags/{engine.flags.engine}.json"
        assert len(flags) == len(set(flags)), f"a flag appears twice: {plan.argv}"
        assert "127.0.0.1" in plan.argv and "8123" in plan.argv
        assert plan.port == 8123


@pytest.mark.parametrize("case", sorted(CASES))
def test_launch_is_pure_and_order_independent(case: str) -> None:
    engine, loaded = engine_and_spec(case)
    for config in configs(loaded.spec):
        first = engine.launch(loaded.spec, config, host="0.0.0.0", port=9000)
        again = engine.launch(loaded.spec, dict(config), host="0.0.0.0", port=9000)
        reordered = engine.launch(
            loaded.spec, dict(reversed(list(config.items()))), host="0.0.0.0", port=9000
        )
        assert first == again == reordered
        assert engine.resolve(loaded.spec, config) == engine.resolve(
            loaded.spec, dict(reversed(config.items()))
        )


@pytest.mark.parametrize("case", sorted(CASES))
def test_container_args_are_the_command_without_a_doubled_entrypoint(case: str) -> None:
    engine, loaded = engine_and_spec(case)
    assert isinstance(engine, TableEngine)
    config = configs(loaded.spec)[0]
    plan = engine.launch(loaded.spec, config, host="0.0.0.0", port=8000)
    args = plan.argv[len(engine.command()) :]
    assert plan.argv[: len(engine.command())] == engine.command()
    assert plan.container_args == engine.container_command() + args
    if case == "vllm":
        # the vllm/vllm-openai image's entrypoint is `vllm serve`: the arguments start with the model
        assert plan.container_args[0] == loaded.spec.spec.model.id
    if case == "llamacpp-native":
        # ghcr.io/ggml-org/llama.cpp:server runs llama-server itself
        assert plan.container_args[:2] == ["--model", loaded.spec.spec.model.id]
    if case in ("sglang", "trtllm"):
        # their images have no server entrypoint: the container runs the whole command
        assert plan.container_args[: len(engine.command())] == engine.command()


@pytest.mark.parametrize("case", sorted(CASES))
def test_gpus_and_world_size_follow_the_parallel_settings(case: str) -> None:
    engine, loaded = engine_and_spec(case)
    for config in configs(loaded.spec):
        plan = engine.launch(loaded.spec, config, host="127.0.0.1", port=8000)
        assert plan.gpus == engine.gpus_for(loaded.spec, config)
        assert plan.world_size == max(plan.gpus, 1)
        assert engine.config_problems(loaded.spec, config) == []


def _bool_cases() -> list[tuple[str, str]]:
    out = []
    for case in sorted(CASES):
        engine, _ = engine_and_spec(case)
        for info in engine.flags.flags.values():
            if info.type == "bool" and info.name not in engine.rule_flags():
                out.append((case, info.name))
    return out


@pytest.mark.parametrize(("case", "flag"), _bool_cases())
def test_booleans_follow_the_engine_style(case: str, flag: str) -> None:
    name, variant, _ = CASES[case]
    engine = get_engine(name, variant)
    info = engine.flags.get(flag)
    assert info is not None and info.bool_style is not None
    base = {"gpu": "h100"} if name == "sim" else {}
    table = engine.flags
    on = engine.launch(load(name, variant=variant, args={**base, flag: True}).spec, {}, host="h", port=1).argv
    off = engine.launch(
        load(name, variant=variant, args={**base, flag: False}).spec, {}, host="h", port=1
    ).argv
    positive, negative = "--" + flag, "--no" + table.separator + flag
    expected_on, expected_off = {
        "optional": ([positive], [negative]),
        "store_true": ([positive], []),
        "store_false": ([], [positive]),
        "value": ([positive, "true"], [positive, "false"]),
    }[info.bool_style]
    for argv, expected in ((on, expected_on), (off, expected_off)):
        found = [a for a in argv if a in (positive, negative)]
        if not expected:
            assert found == [], argv
            continue
        i = argv.index(expected[0])
        assert argv[i : i + len(expected)] == expected, argv


# --------------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("engine_name", sorted(par.ENGINES))
def test_every_parallel_preset_is_valid_and_changes_the_command_line(engine_name: str) -> None:
    engine = get_engine(engine_name)
    loaded = load(engine_name)
    plain = engine.launch(loaded.spec, {}, host="h", port=1)
    for preset in par.presets(engine_name):
        config = {"parallel.preset": preset}
        assert engine.config_problems(loaded.spec, config) == [], preset
        plan = engine.launch(loaded.spec, config, host="h", port=1)
        assert plan.argv != plain.argv or plan.files != plain.files, (
            f"{engine_name} preset {preset} changes nothing"
        )
        assert plan.gpus >= 1


def test_an_engine_without_presets_refuses_one() -> None:
    engine = get_engine("llamacpp")
    loaded = load("llamacpp")
    [rejection] = engine.config_problems(loaded.spec, {"parallel.preset": "single-gpu"})
    assert "has no parallel presets" in rejection.message and rejection.fields == ("parallel.preset",)
    with pytest.raises(ConfigRejected):
        engine.launch(loaded.spec, {"parallel.preset": "single-gpu"}, host="h", port=1)


@pytest.mark.parametrize(
    ("engine_name", "expected"),
    [
        ("vllm", "/reset_prefix_cache"),
        ("sglang", "/flush_cache"),
        ("sim", "/reset_prefix_cache"),
        ("trtllm", None),
        ("llamacpp", None),
    ],
)
def test_reset_cache_path(engine_name: str, expected: str | None) -> None:
    engine = get_engine(engine_name)
    plan = engine.launch(load(engine_name).spec, {}, host="h", port=1)
    assert plan.reset_cache_path == expected
