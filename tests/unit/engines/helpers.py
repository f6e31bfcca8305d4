"""Spec builders for the engine tests: real specs, loaded through the real loader."""

from __future__ import annotations

from typing import Any

import yaml

from specs.loader import LoadedSpec, load_spec_text

MODELS = {
    "vllm": "meta-llama/Llama-3.1-8B-Instruct",
    "sglang": "Qwen/Qwen2.5-7B-Instruct",
    "trtllm": "meta-llama/Llama-3.1-8B-Instruct",
    "llamacpp": "./models/tiny.gguf",
    "sim": "llama-3-8b",
}


def spec_dict(
    engine: str,
    *,
    args: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    quantization: dict[str, Any] | None = None,
    parallel: dict[str, Any] | None = None,
    constraints: list[str] | None = None,
    backend: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    variant: str | None = None,
    env: dict[str, Any] | None = None,
) -> dict[str, Any]:
    search: dict[str, Any] = {"strategy": "tpe", "maxExperiments": 4, "parameters": parameters or {}}
    if quantization is not None:
        search["quantization"] = quantization
    if parallel is not None:
        search["parallel"] = parallel
    if constraints:
        search["constraints"] = constraints
    engine_block: dict[str, Any] = {"name": engine, "args": args if args is not None else {}}
    if engine == "sim" and args is None:
        engine_block["args"] = {"gpu": "h100"}
    if variant is not None:
        engine_block["variant"] = variant
    if env is not None:
        engine_block["env"] = env
    return {
        "apiVersion": "autotuner/v1",
        "kind": "TuningSpec",
        "metadata": {"name": "t"},
        "spec": {
            "model": model or {"id": MODELS[engine]},
            "engine": engine_block,
            "backend": backend or {"kind": "local"},
            "search": search,
            "workload": {
                "dataset": {"kind": "synthetic", "input": {"mean": 128}, "output": {"mean": 32}},
                "load": {"concurrency": [1]},
            },
        },
    }


def load(engine: str, **kwargs: Any) -> LoadedSpec:
    """Build a spec as YAML text and load it the way the daemon does."""
    text = yaml.safe_dump(spec_dict(engine, **kwargs), sort_keys=False)
    return load_spec_text(text, file="test.yaml")
