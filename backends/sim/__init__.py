"""The simulated engine ``sim``: a real OpenAI-compatible HTTP server with a modelled GPU behind it.

It exists so that everything around an engine — deploy backends, the load generator, studies,
SLOs, reports, the demo — can be exercised for real on a machine without a GPU, fast
(``--time-scale``), and deterministically (``--seed``). It is started like any engine, with
vLLM's flag names, and behaves like one where the tuner can see it: continuous batching, KV-cache
capacity from memory, preemption, out-of-memory at start-up, and the usual trade-offs (more
sequences: more throughput and worse TPOT; fp8 KV: more capacity; TP=2: lower latency, lower
per-GPU throughput). Its numbers come from a roofline model, not a GPU: they are *simulated*,
and every response says so (``"system_fingerprint": "autotuner-sim"``).

Layout, one idea per module:

* :mod:`.catalogs` (+ ``catalog/*.json``): GPUs and model architectures, with sources;
* :mod:`.config`: the flags; :mod:`.build`: start-up checks and the memory plan;
* :mod:`.roofline`: the step-time model; :mod:`.kvcache`, :mod:`.scheduler`: continuous batching;
* :mod:`.offline`: the same model without a server, in simulated time (tests, planning);
* :mod:`.engine`: the scheduler paced against the wall clock; :mod:`.api`: OpenAI request
  parsing and response formatting; :mod:`.server`: the aiohttp server and the process.

``docs/sim-engine.md`` describes the model, its numbers and its limits.
"""

from backends.sim.build import EngineSetup, MemoryPlan, build
from backends.sim.config import SimConfig, add_arguments, build_parser, config_from_args, parse_config
from backends.sim.errors import OutOfMemoryError, StartupError

__all__ = [
    "EngineSetup",
    "MemoryPlan",
    "OutOfMemoryError",
    "SimConfig",
    "StartupError",
    "add_arguments",
    "build",
    "build_parser",
    "config_from_args",
    "parse_config",
]
