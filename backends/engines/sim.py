"""The simulated engine: ``python -m backends.sim --model NAME --host H --port P [flags]``.

It takes vLLM's flag names (see ``flags/sim.json``), so a spec can be tried on the sim and then
moved to vLLM. ``model.id`` is a name of the simulator's catalog and ``engine.args.gpu`` the
simulated GPU. Its GPUs are simulated: :attr:`LaunchPlan.simulated` tells the backend to count
them for per-GPU metrics and to lease none. In a container it runs through the autotuner's own
CLI, ``autotuner engine sim``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from backends.engines import startup
from backends.engines.common import TableEngine
from specs.errors import Rejection
from specs.model import Scalar, TuningSpec


class SimEngine(TableEngine):
    name = "sim"
    title = "the sim engine"
    table_name = "sim"
    reset_cache_path = "/reset_prefix_cache"
    simulated = True

    def command(self) -> list[str]:
        return [sys.executable, "-m", "backends.sim"]

    def container_command(self) -> list[str]:
        return ["autotuner", "engine", "sim"]

    def reserved(self) -> dict[str, str]:
        return {
            **super().reserved(),
            "model": "the model comes from spec.model.id (a name of the sim catalog)",
            "served-model-name": "set spec.model.servedName instead",
        }

    def model_problems(self, spec: TuningSpec) -> list[tuple[str, str]]:
        model = spec.spec.model
        out = []
        if model.tokenizer:
            out.append(("model.tokenizer", "the sim engine has no tokenizer setting: remove model.tokenizer"))
        if model.revision != "main":
            out.append(
                ("model.revision", "the sim catalog's models have no revisions: remove model.revision")
            )
        return out

    def startup_rules(
        self, spec: TuningSpec, flags: Mapping[str, Scalar], gpu: str | None
    ) -> list[Rejection]:
        # the simulator's own start-up checks are vLLM's rules plus its memory plan: run them
        out = startup.vllm_rules(flags, spec.spec.model.id)
        if out:
            return out
        sim_gpu = flags.get("gpu")
        problem = startup.memory_problem(
            startup.sim_argv(spec.spec.model.id, str(sim_gpu) if sim_gpu is not None else gpu, flags)
        )
        return [problem] if problem is not None else []

    def default_values(self, spec: TuningSpec) -> dict[str, Scalar]:
        """The simulator's defaults (:class:`backends.sim.config.SimConfig`) by flag and axis name."""
        from backends.sim.config import DEFAULT_MAX_NUM_BATCHED_TOKENS, SimConfig

        d = SimConfig()
        out: dict[str, Scalar] = {
            "max-num-seqs": d.max_num_seqs,
            "gpu-memory-utilization": d.gpu_memory_utilization,
            "tensor-parallel-size": d.tensor_parallel_size,
            "kv-cache-dtype": d.kv_cache_dtype,
            "enable-chunked-prefill": d.enable_chunked_prefill,
            "enable-prefix-caching": d.enable_prefix_caching,
            "block-size": d.block_size,
            "quant.kvcache_dtype": "auto",
            "parallel.tp": 1,
        }
        if spec.spec.engine.args.get("enable-chunked-prefill", True) is not False:
            out["max-num-batched-tokens"] = DEFAULT_MAX_NUM_BATCHED_TOKENS
        return out

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [self.spell("model"), model.id]
        if model.served_name:
            out += [self.spell("served-model-name"), model.served_name]
        return out
