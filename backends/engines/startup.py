"""Start-up rules: configurations an engine accepts as flags but refuses (or cannot fit) when it
starts, known before anything runs, so that no experiment is spent on them.

Each rule names the engine source it follows. They differ from :meth:`Engine.config_problems`
(combinations the mapping cannot express at all, which ``validate`` reports as errors): a
start-up rule depends on values the engine derives at start (the model's context length, the
GPU's memory), so ``validate`` *warns* with the share of the space it excludes, ``plan`` marks the
excluded command lines, and the study skips them unmeasured.

The memory pre-check is the simulator's own memory plan (:func:`backends.sim.build.build`, after
vLLM's profiling: weights per GPU, peak activations, CUDA reserve, then KV blocks at
``gpu-memory-utilization``) run on the model and GPU catalogs (``backends/sim/catalog``). It only
refuses what cannot fit: weights above the memory budget, no room for one KV block, or KV room
below one request at ``max-model-len``. A model or GPU missing from the catalogs is not checked.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping

from specs.errors import Rejection
from specs.model import Scalar

#: where each rule comes from
SOURCES = {
    "vllm": "vllm/config/scheduler.py, SchedulerConfig._verify_args (vLLM 0.10-0.11)",
    "sglang": "python/sglang/srt/server_args.py, ServerArgs.check_server_args (SGLang 0.4-0.5)",
    "llamacpp": "llama.cpp src/llama-context.cpp: a quantized V cache needs flash attention "
    "(checked with the quantization mapping, backends/engines/quantization.py)",
    "trtllm": "tensorrt_llm/builder.py BuildConfig: max_num_tokens falls between max_batch_size and "
    "max_batch_size * max_input_len",
}


def _int(v: Scalar | None) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _model_len(flags: Mapping[str, Scalar], model_id: str, key: str = "max-model-len") -> int | None:
    given = _int(flags.get(key))
    if given is not None:
        return given
    try:
        from backends.sim.catalogs import find_model

        return find_model(model_id).max_position_embeddings
    except LookupError:
        return None


def vllm_rules(flags: Mapping[str, Scalar], model_id: str) -> list[Rejection]:
    """vLLM's scheduler checks on flags the user set (defaults are derived so that they pass)."""
    out: list[Rejection] = []
    batched = _int(flags.get("max-num-batched-tokens"))
    if batched is None:
        return out
    seqs = _int(flags.get("max-num-seqs"))
    if seqs is not None and batched < seqs:
        out.append(
            Rejection(
                f"vLLM refuses max-num-batched-tokens ({batched}) below max-num-seqs ({seqs}) at start-up "
                f"({SOURCES['vllm']})",
                ("max-num-batched-tokens", "max-num-seqs"),
            )
        )
    if flags.get("enable-chunked-prefill") is False:
        length = _model_len(flags, model_id)
        if length is not None and batched < length:
            out.append(
                Rejection(
                    f"without chunked prefill vLLM refuses max-num-batched-tokens ({batched}) below "
                    f"max-model-len ({length}) at start-up ({SOURCES['vllm']})",
                    ("enable-chunked-prefill", "max-num-batched-tokens", "engine.args.max-model-len"),
                )
            )
    return out


def sglang_rules(flags: Mapping[str, Scalar]) -> list[Rejection]:
    chunk = _int(flags.get("chunked-prefill-size"))
    page = _int(flags.get("page-size")) or 1
    if chunk is not None and chunk > 0 and chunk % page:
        return [
            Rejection(
                f"SGLang refuses chunked-prefill-size {chunk}, not a multiple of page-size {page} "
                f"({SOURCES['sglang']})",
                ("chunked-prefill-size", "page-size"),
            )
        ]
    return []


def trtllm_rules(flags: Mapping[str, Scalar]) -> list[Rejection]:
    tokens = _int(flags.get("max_num_tokens"))
    batch = _int(flags.get("max_batch_size"))
    if tokens is not None and batch is not None and tokens < batch:
        return [
            Rejection(
                f"TensorRT-LLM needs max_num_tokens ({tokens}) of at least max_batch_size ({batch}): one "
                f"decode token per sequence ({SOURCES['trtllm']})",
                ("max_num_tokens", "max_batch_size"),
            )
        ]
    return []


def memory_problem(sim_argv: list[str]) -> Rejection | None:
    """The simulator's start-up checks and memory plan on vLLM-style flags; None when it fits
    (or the model or GPU is not in the catalogs)."""
    from backends.sim.build import build
    from backends.sim.catalogs import UnknownNameError
    from backends.sim.config import build_parser, config_from_args
    from backends.sim.errors import OutOfMemoryError, StartupError

    parser = build_parser()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ns, _unknown = parser.parse_known_args(sim_argv)
    except SystemExit:  # a value the simulator does not parse (a model outside its catalog): no verdict
        return None
    try:
        build(config_from_args(ns))
    except OutOfMemoryError as exc:
        return Rejection(
            f"does not fit in GPU memory (memory pre-check on the model and GPU catalogs): {exc}",
            ("gpu-memory-utilization", "tensor-parallel-size", "max-num-batched-tokens"),
        )
    except StartupError as exc:
        return Rejection(f"the engine refuses it at start-up: {exc}", ("max-num-batched-tokens",))
    except UnknownNameError:
        return None
    return None


def sim_argv(model_id: str, gpu: str | None, flags: Mapping[str, Scalar]) -> list[str]:
    """vLLM-style flags as the simulator's parser takes them."""
    argv = ["--model", model_id]
    if gpu:
        argv += ["--gpu", gpu]
    for name, value in flags.items():
        if name in ("model", "gpu", "host", "port"):
            continue
        if isinstance(value, bool):
            argv.append(f"--{name}" if value else f"--no-{name}")
        else:
            argv += [f"--{name}", str(value)]
    return argv
