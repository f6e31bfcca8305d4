"""Command-line flags of the simulated engine, and the configuration they make.

The flags are spelled exactly as vLLM spells them (``--max-num-seqs``, ``--enable-chunked-prefill``
/ ``--no-enable-chunked-prefill``, ...) so that the flag mapping, the search space and the
deployable artifacts of a spec are the same whether it runs on ``sim`` or on ``vllm``; the
simulator-only flags (``--gpu``, ``--time-scale``, ``--fault``, ...) have names vLLM does not use.

Two kinds of bad input, handled as vLLM handles them:

* a malformed value (``--max-num-seqs abc``, an unknown ``--model``) is a usage error: argparse
  prints it with the usage line and exits 2;
* a well-formed but impossible configuration (``--max-num-batched-tokens`` below
  ``--max-num-seqs``, weights that do not fit) is a start-up failure: the engine exits 1 with a
  ``ValueError``/out-of-memory message, so a tuner sees a failed experiment, not a bad spec.
  Those checks live in :mod:`backends.sim.memory`, which sees the whole picture.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from backends.sim.catalogs import UnknownNameError, find_gpu, find_model, gpus, models

KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
QUANTIZATIONS = ("fp8", "awq", "gptq", "int8")
DTYPES = ("auto", "bfloat16", "float16")
BLOCK_SIZES = (1, 8, 16, 32, 64, 128)
FAULTS = ("none", "crash-at-start", "hang-at-start", "crash-after-requests")

#: vLLM's own default; with chunked prefill off vLLM raises it to at least max-model-len
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192

Fault = Literal["none", "crash-at-start", "hang-at-start", "crash-after-requests"]


@dataclass(frozen=True)
class SimConfig:
    """One engine instance's settings, as parsed from its flags (no catalog lookups yet)."""

    model: str = "llama-3-8b"
    gpu: str = "h100"
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    max_num_seqs: int = 256
    #: ``None``: the default (8192, or max-model-len when chunked prefill is off)
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    block_size: int = 16
    #: ``None``: the model's ``max_position_embeddings``
    max_model_len: int | None = None
    dtype: str = "auto"
    seed: int = 0
    time_scale: float = 1.0
    #: simulated seconds; ``None``: derived from the weight size
    startup_seconds: float | None = None
    fault: Fault = "none"
    fault_after: int = 10
    zero_cost: bool = False
    emit_timestamps: bool = False

    @property
    def model_name(self) -> str:
        """The name the OpenAI API answers to (vLLM: ``--served-model-name``, else ``--model``)."""
        return self.served_model_name or self.model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
port_number = _checked(int, lambda v: 0 <= v <= 65535, "a port number (0-65535)")
fraction = _checked(float, lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]")
positive_float = _checked(float, lambda v: v > 0.0, "a positive number")
non_negative_float = _checked(float, lambda v: v >= 0.0, "a number >= 0")


def _catalog_name(find: Callable[[str], Any]) -> Callable[[str], str]:
    """Validate a catalog name but keep the user's spelling (it is the served model name)."""

    def parse(text: str) -> str:
        try:
            find(text)
        except UnknownNameError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def _lower(text: str) -> str:
    return text.lower()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the engine's flags to ``parser``.

    Shared by ``python -m backends.sim`` and ``autotuner engine sim``, so both accept the same flags.
    """
    d = SimConfig()
    g = parser.add_argument_group("model and hardware")
    g.add_argument(
        "--model",
        type=_catalog_name(find_model),
        default=d.model,
        help=f"catalog model, key or Hugging Face id, any case (default {d.model}; "
        f"known: {', '.join(models())})",
    )
    g.add_argument(
        "--gpu",
        type=_catalog_name(find_gpu),
        default=d.gpu,
        help=f"catalog GPU (default {d.gpu}; known: {', '.join(gpus())})",
    )
    g.add_argument("--served-model-name", default=None, help="name the API answers to (default: --model)")
    g.add_argument(
        "--dtype", type=_lower, choices=DTYPES, default=d.dtype, help="weight dtype; all are 16-bit"
    )
    g.add_argument(
        "--quantization",
        type=_lower,
        choices=QUANTIZATIONS,
        default=None,
        help="weight quantization (default: none, 16-bit weights)",
    )
    g.add_argument(
        "--max-model-len", type=positive_int, default=None, help="context length (default: the model's)"
    )

    g = parser.add_argument_group("engine (vLLM names)")
    g.add_argument("--max-num-seqs", type=positive_int, default=d.max_num_seqs, help="sequences per step")
    g.add_argument(
        "--max-num-batched-tokens",
        type=positive_int,
        default=None,
        help=f"tokens per step (default {DEFAULT_MAX_NUM_BATCHED_TOKENS}; "
        "without chunked prefill at least --max-model-len, as vLLM does)",
    )
    g.add_argument(
        "--gpu-memory-utilization",
        type=fraction,
        default=d.gpu_memory_utilization,
        help="fraction of GPU memory for weights, activations and KV cache",
    )
    g.add_argument("--tensor-parallel-size", "-tp", type=positive_int, default=d.tensor_parallel_size)
    g.add_argument("--kv-cache-dtype", type=_lower, choices=KV_CACHE_DTYPES, default=d.kv_cache_dtype)
    g.add_argument(
        "--block-size", type=int, choices=BLOCK_SIZES, default=d.block_size, help="tokens per KV block"
    )
    g.add_argument(
        "--enable-chunked-prefill",
        action=argparse.BooleanOptionalAction,
        default=d.enable_chunked_prefill,
        help="split long prompts over several steps",
    )
    g.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=d.enable_prefix_caching,
        help="share the KV blocks of identical prompt prefixes",
    )
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the simulated output lengths")

    g = parser.add_argument_group("server")
    g.add_argument("--host", default=d.host, help=f"address to bind (default {d.host})")
    g.add_argument("--port", type=port_number, default=d.port, help="port (default 8000; 0 picks a free one)")

    g = parser.add_argument_group("simulation")
    g.add_argument(
        "--time-scale",
        type=positive_float,
        default=d.time_scale,
        help="run this many times faster than real time: every simulated duration is divided by it",
    )
    g.add_argument(
        "--startup-seconds",
        type=non_negative_float,
        default=None,
        help="simulated model-load time before /health answers 200 (default: from the weight size)",
    )
    g.add_argument("--fault", choices=FAULTS, default=d.fault, help="simulate a broken engine (for tests)")
    g.add_argument(
        "--fault-after",
        type=positive_int,
        default=d.fault_after,
        help=f"requests started before crash-after-requests crashes (default {d.fault_after})",
    )
    g.add_argument(
        "--zero-cost",
        action="store_true",
        help="no model cost: stream tokens as fast as the event loop allows (load-generator benchmarks)",
    )
    g.add_argument(
        "--emit-timestamps",
        action="store_true",
        help='add "x_sent_at" (time.time() of the send) to every streamed chunk',
    )
    return parser


def build_parser(prog: str = "python -m backends.sim") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Simulated LLM inference engine: an OpenAI-compatible server whose timing follows "
        "a roofline model of the chosen GPU and model. Results are simulated, not measured.",
    )
    return add_arguments(parser)


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    """The :class:`SimConfig` of a namespace filled by :func:`add_arguments` (other keys ignored)."""
    fields = SimConfig.__dataclass_fields__
    return SimConfig(**{k: v for k, v in vars(ns).items() if k in fields})


def parse_config(argv: Sequence[str] | None = None) -> SimConfig:
    return config_from_args(build_parser().parse_args(argv))
