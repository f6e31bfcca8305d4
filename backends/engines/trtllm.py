"""TensorRT-LLM: ``trtllm-serve MODEL --host H --port P [flags]`` (the PyTorch backend by default).

``trtllm-serve`` exposes only a few LLM API arguments as flags; the rest (KV cache dtype, context
parallelism, MoE tensor parallelism, attention data parallelism, quantization of the TensorRT
backend) go through ``--extra_llm_api_options FILE.yaml``. The mapping writes that file's content
into :attr:`LaunchPlan.files` and points the flag at it, relative to the engine's working
directory; the deploy backend writes the file there before starting the engine.

What cannot be expressed is refused, not dropped: ``trtllm-serve`` has no flag to rename the
served model or to pin a Hugging Face revision, and no data parallelism.

The NGC image (``nvcr.io/nvidia/tensorrt-llm/release``) has no server entrypoint, so a container
runs ``trtllm-serve`` itself. There is no prefix-cache reset endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

from backends.engines import startup
from backends.engines.common import TableEngine
from specs.errors import Rejection
from specs.model import Scalar, TuningSpec


class TrtllmEngine(TableEngine):
    name = "trtllm"
    title = "TensorRT-LLM"
    table_name = "trtllm"
    image_template = "nvcr.io/nvidia/tensorrt-llm/release:{tag}"

    def image_tag(self, version: str | None) -> str:
        """NGC tags TensorRT-LLM releases by the bare version (``1.0.0``)."""
        return version or "latest"

    def command(self) -> list[str]:
        return ["trtllm-serve"]

    def container_command(self) -> list[str]:
        return ["trtllm-serve"]

    def reserved(self) -> dict[str, str]:
        return {
            **super().reserved(),
            "model": "the model comes from spec.model.id",
            "tokenizer": "set spec.model.tokenizer instead",
        }

    def model_problems(self, spec: TuningSpec) -> list[tuple[str, str]]:
        model = spec.spec.model
        out = []
        if model.served_name:
            out.append(
                ("model.servedName", "trtllm-serve has no flag to rename the served model (it is model.id)")
            )
        if model.revision != "main":
            out.append(
                (
                    "model.revision",
                    "trtllm-serve cannot pin a Hugging Face revision: download that revision and give its "
                    "local path as model.id",
                )
            )
        return out

    def extra_rule_flags(self) -> frozenset[str]:
        return frozenset({"backend", "kv_cache_free_gpu_memory_fraction", "extra_llm_api_options"})

    def startup_rules(
        self, spec: TuningSpec, flags: Mapping[str, Scalar], gpu: str | None
    ) -> list[Rejection]:
        return startup.trtllm_rules(flags)

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [model.id]
        if model.tokenizer:
            out += [self.spell("tokenizer"), model.tokenizer]
        return out

    def served_model(self, spec: TuningSpec) -> str:
        return spec.spec.model.id
