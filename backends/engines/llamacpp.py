"""llama.cpp, two ways:

* ``python`` (default): llama-cpp-python's server, ``python -m llama_cpp.server --model FILE
  --host H --port P [--n_threads 4 --flash_attn true ...]``. Its options are pydantic-settings
  fields spelled with underscores, and booleans take a value. It is an optional extra of this
  package (``autotuner[llamacpp]``), so it runs with the daemon's own Python.
* ``native``: the ``llama-server`` binary, ``llama-server --model FILE --host H --port P
  [--threads 4 --ctx-size 4096 ...]``, long option names; the ``ghcr.io/ggml-org/llama.cpp:server``
  image has it as entrypoint.

Neither has GPU parallelism here: every parallel setting other than 1 is refused. An experiment
needs no GPU unless layers are offloaded (``n_gpu_layers`` / ``n-gpu-layers`` other than 0), and
then one. Neither has a prefix-cache reset endpoint (llama-server's slot cache is per slot), and
llama-cpp-python has no ``/health``, so readiness is ``/v1/models`` there.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from backends.engines.common import Built, TableEngine
from specs.model import TuningSpec


def _offloads(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value != 0


class LlamacppEngine(TableEngine):
    """llama-cpp-python's server (variant ``python``)."""

    name = "llamacpp"
    title = "llama-cpp-python"
    table_name = "llamacpp"
    health_paths: ClassVar[tuple[str, ...]] = ("/v1/models",)
    gpu_layers_flag: ClassVar[str] = "n_gpu_layers"
    flash_flag: ClassVar[str] = "flash_attn"
    alias_flag: ClassVar[str] = "model_alias"

    def __init__(self, variant: str | None = None) -> None:
        super().__init__(variant or "python")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server"]

    def container_command(self) -> list[str]:
        return ["python3", "-m", "llama_cpp.server"]

    def reserved(self) -> dict[str, str]:
        return {
            **super().reserved(),
            "model": "the GGUF file comes from spec.model.id",
            self.alias_flag: "set spec.model.servedName instead",
            "hf_pretrained_model_name_or_path": "set spec.model.tokenizer instead",
        }

    def model_problems(self, spec: TuningSpec) -> list[tuple[str, str]]:
        if spec.spec.model.revision != "main":
            return [
                (
                    "model.revision",
                    "llama.cpp loads one GGUF file and cannot pin a revision: download it and give its "
                    "path as model.id",
                )
            ]
        return []

    def extra_rule_flags(self) -> frozenset[str]:
        return frozenset({self.gpu_layers_flag, self.flash_flag})

    def gpus(self, built: Built) -> int:
        value = built.raw.get(self.gpu_layers_flag, (0, ""))[0]
        return 1 if _offloads(value) else 0

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [self.spell("model"), model.id]
        if model.served_name:
            out += [self.spell(self.alias_flag), model.served_name]
        if model.tokenizer:
            out += [self.spell("hf_pretrained_model_name_or_path"), model.tokenizer]
        return out


class LlamaServerEngine(LlamacppEngine):
    """The native ``llama-server`` binary (variant ``native``)."""

    title = "llama-server"
    table_name = "llamacpp-native"
    health_paths: ClassVar[tuple[str, ...]] = ("/health", "/v1/models")
    gpu_layers_flag = "n-gpu-layers"
    flash_flag = "flash-attn"
    alias_flag = "alias"

    def __init__(self, variant: str | None = None) -> None:
        super().__init__("native")

    def command(self) -> list[str]:
        return ["llama-server"]

    def container_command(self) -> list[str]:
        return []

    def reserved(self) -> dict[str, str]:
        return {
            "host": "the host is chosen by the deploy backend for each experiment; remove it",
            "port": "the port is chosen by the autotuner for each experiment; remove it",
            "model": "the GGUF file comes from spec.model.id",
            self.alias_flag: "set spec.model.servedName instead",
        }

    def model_problems(self, spec: TuningSpec) -> list[tuple[str, str]]:
        out = super().model_problems(spec)
        if spec.spec.model.tokenizer:
            out.append(
                ("model.tokenizer", "llama-server uses the GGUF's own tokenizer: remove model.tokenizer")
            )
        return out

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [self.spell("model"), model.id]
        if model.served_name:
            out += [self.spell(self.alias_flag), model.served_name]
        return out
