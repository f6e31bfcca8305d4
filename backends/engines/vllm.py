"""vLLM: ``vllm serve MODEL --host H --port P [flags]``.

The model is the positional ``model_tag`` of ``vllm serve``; the official image
(``vllm/vllm-openai``) has ``vllm serve`` as its entrypoint, so a container gets the arguments
only, starting with the model (the original system wrote ``vllm serve`` twice there).

The prefix-cache reset endpoint ``POST /reset_prefix_cache`` exists only when the server runs with
``VLLM_SERVER_DEV_MODE=1``, so every instance gets that variable: load points must not share a
warm cache. Dev mode also exposes other debugging endpoints; the server still binds where the
backend says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from backends.engines import startup
from backends.engines.common import TableEngine
from specs.errors import Rejection
from specs.model import Scalar, TuningSpec


class VllmEngine(TableEngine):
    name = "vllm"
    title = "vLLM"
    table_name = "vllm"
    image_template = "vllm/vllm-openai:{tag}"
    reset_cache_path = "/reset_prefix_cache"
    base_env: ClassVar[dict[str, str]] = {"VLLM_SERVER_DEV_MODE": "1"}
    base_notes = ("VLLM_SERVER_DEV_MODE=1 so that /reset_prefix_cache exists between load points",)

    def command(self) -> list[str]:
        return ["vllm", "serve"]

    def container_command(self) -> list[str]:
        return []

    def reserved(self) -> dict[str, str]:
        return {
            **super().reserved(),
            "model": "the model comes from spec.model.id",
            "served-model-name": "set spec.model.servedName instead",
            "tokenizer": "set spec.model.tokenizer instead",
            "revision": "set spec.model.revision instead",
        }

    def startup_rules(
        self, spec: TuningSpec, flags: Mapping[str, Scalar], gpu: str | None
    ) -> list[Rejection]:
        out = startup.vllm_rules(flags, spec.spec.model.id)
        if not out and gpu is not None:
            oom = startup.memory_problem(startup.sim_argv(spec.spec.model.id, gpu, flags))
            if oom is not None:
                out.append(oom)
        return out

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [model.id]
        if model.revision != "main":
            out += [self.spell("revision"), model.revision]
        if model.tokenizer:
            out += [self.spell("tokenizer"), model.tokenizer]
        if model.served_name:
            out += [self.spell("served-model-name"), model.served_name]
        return out
