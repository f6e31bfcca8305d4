"""Engine-agnostic parallelism: the fields, the named presets of each engine, the rules each
engine really enforces, the GPUs an experiment needs, and the flags each field becomes.

Why one file for all engines: the same words (``tp``, ``dp``, ``ep``) mean different GPU counts
on different engines. SGLang's dp-attention runs data parallelism *inside* the tensor-parallel
GPUs, vLLM's expert parallelism spans ``tp × dp`` GPUs and cannot be sized on its own, and
TensorRT-LLM has no data parallelism at all. Keeping the rules side by side is what keeps the
GPU counts (and so the per-GPU metrics and GPU leases) honest.

A setting the engine lacks is an error, never dropped: the original system ignored presets at run
time and measured something other than what the spec said.

Where a value comes from is kept (:attr:`ParallelSettings.origin`): the ``parallel`` block, a
preset, or an engine flag given directly (``tensor-parallel-size: [1, 2]`` in ``parameters`` is
read as ``tp``). The origin lets ``check_spec`` point at the YAML line responsible.

Three modules: :mod:`~.settings` (the vocabulary and the settings of one configuration),
:mod:`~.engines` (each engine's rules, side by side) and :mod:`~.resolve` (a configuration's
settings, flags and GPU count). The package re-exports what the engine pipeline
(:mod:`backends.engines.common`) and the contract tests use.
"""

from __future__ import annotations

from backends.engines.parallel.engines import ENGINES
from backends.engines.parallel.resolve import gpus, owned_flags, presets, resolve, twice_message
from backends.engines.parallel.settings import FIELDS, ParallelResult, ParallelSettings

__all__ = [
    "ENGINES",
    "FIELDS",
    "ParallelResult",
    "ParallelSettings",
    "gpus",
    "owned_flags",
    "presets",
    "resolve",
    "twice_message",
]
