"""SGLang: ``python -m sglang.launch_server --model-path MODEL --host H --port P [flags]``.

The ``lmsysorg/sglang`` image has no server entrypoint, so a container runs the same module with
``python3``. Booleans are argparse ``store_true``: SGLang has no ``--no-`` forms, so ``false``
means "leave the flag out", which is SGLang's default for every boolean it has.

``POST /flush_cache`` empties the radix (prefix) cache between load points.
"""

from __future__ import annotations

from collections.abc import Mapping

from backends.engines import startup
from backends.engines.common import TableEngine
from specs.errors import Rejection
from specs.model import Scalar, TuningSpec


class SglangEngine(TableEngine):
    name = "sglang"
    title = "SGLang"
    table_name = "sglang"
    image_template = "lmsysorg/sglang:{tag}"
    reset_cache_path = "/flush_cache"

    def command(self) -> list[str]:
        # SGLang lives in its own environment, not the daemon's: the python3 found on PATH runs it
        return ["python3", "-m", "sglang.launch_server"]

    def container_command(self) -> list[str]:
        return ["python3", "-m", "sglang.launch_server"]

    def reserved(self) -> dict[str, str]:
        return {
            **super().reserved(),
            "model-path": "the model comes from spec.model.id",
            "served-model-name": "set spec.model.servedName instead",
            "tokenizer-path": "set spec.model.tokenizer instead",
            "revision": "set spec.model.revision instead",
        }

    def startup_rules(
        self, spec: TuningSpec, flags: Mapping[str, Scalar], gpu: str | None
    ) -> list[Rejection]:
        return startup.sglang_rules(flags)

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [self.spell("model-path"), model.id]
        if model.revision != "main":
            out += [self.spell("revision"), model.revision]
        if model.tokenizer:
            out += [self.spell("tokenizer-path"), model.tokenizer]
        if model.served_name:
            out += [self.spell("served-model-name"), model.served_name]
        return out
