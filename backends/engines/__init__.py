"""Engine mappings: a spec's configuration → the exact command line of vLLM, SGLang,
TensorRT-LLM, llama.cpp or the sim engine.

Public surface: :func:`get_engine`, :data:`ENGINES`, and the protocol and data types of
:mod:`backends.engines.base`. Each engine is a small module over the shared pipeline of
:mod:`backends.engines.common`; quantization and parallelism, which every engine spells
differently, live in :mod:`backends.engines.quantization` and :mod:`backends.engines.parallel`.
Flag tables (``flags/*.json``) record each engine's real flags and the release they came from.
"""

from __future__ import annotations

from collections.abc import Callable

from backends.engines.base import Engine, FlagTable, LaunchPlan, load_flag_table
from backends.engines.llamacpp import LlamacppEngine, LlamaServerEngine
from backends.engines.replay import ReplayEngine
from backends.engines.sglang import SglangEngine
from backends.engines.sim import SimEngine
from backends.engines.trtllm import TrtllmEngine
from backends.engines.vllm import VllmEngine

#: engine name → factory taking the variant (only llamacpp has variants: python, native)
ENGINES: dict[str, Callable[[str | None], Engine]] = {
    "vllm": lambda variant: VllmEngine(),
    "sglang": lambda variant: SglangEngine(),
    "trtllm": lambda variant: TrtllmEngine(),
    "llamacpp": lambda variant: LlamaServerEngine() if variant == "native" else LlamacppEngine(variant),
    "sim": lambda variant: SimEngine(),
    "replay": lambda variant: ReplayEngine(),
}


def get_engine(name: str, variant: str | None = None) -> Engine:
    """The mapping of engine ``name`` (``spec.engine.name``); ``variant`` is ``spec.engine.variant``."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}: one of {', '.join(ENGINES)}") from None
    if variant is not None and name != "llamacpp":
        raise ValueError(f"engine {name!r} has no variants")
    if variant not in (None, "python", "native"):
        raise ValueError(f"unknown llamacpp variant {variant!r}: python or native")
    return factory(variant)


__all__ = [
    "ENGINES",
    "Engine",
    "FlagTable",
    "LaunchPlan",
    "get_engine",
    "load_flag_table",
]
