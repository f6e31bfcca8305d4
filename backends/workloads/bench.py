"""The prompts of ``autotuner bench``: one level's requests from the command line's dataset
options, through the same workload builder as a spec's (so a synthetic prompt of the bench and of
a study are the same prompt for the same seed), sampled or repeated to the requested count.
"""

from __future__ import annotations

import random
from pathlib import Path

from backends.workloads.build import build_workload
from backends.workloads.model import RequestSpec
from specs.errors import UserError
from specs.model import FileDataset, SyntheticDataset

__all__ = ["bench_prompts"]


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "autotuner" / "datasets"


def bench_prompts(
    n: int,
    *,
    seed: int,
    input_len: int,
    output_len: int,
    input_stddev: float = 0,
    output_stddev: float = 0,
    dataset: Path | None = None,
    dataset_format: str = "jsonl",
    prompt_field: str = "prompt",
) -> tuple[list[RequestSpec], str]:
    """``n`` requests and a one-line description of where they came from."""
    if dataset is None:
        synthetic = SyntheticDataset.model_validate(
            {
                "kind": "synthetic",
                "input": {"mean": input_len, "stddev": input_stddev},
                "output": {"mean": output_len, "stddev": output_stddev},
                "numPrompts": n,
            }
        )
        workload = build_workload(synthetic, seed=seed, base_dir=Path.cwd(), cache_dir=_cache_dir())
        return list(workload.requests), workload.description
    if not dataset.is_file():
        raise UserError(f"--dataset: no such file: {dataset}")
    spec = FileDataset.model_validate(
        {
            "kind": dataset_format,
            "path": str(dataset.resolve()),
            "promptField": prompt_field,
            "output": {"mean": output_len, "stddev": output_stddev},
        }
    )
    workload = build_workload(spec, seed=seed, base_dir=Path.cwd(), cache_dir=_cache_dir())
    reqs = list(workload.requests)
    if not reqs:
        raise UserError(f"--dataset: {dataset} holds no usable prompts")
    if len(reqs) > n:
        reqs = random.Random(seed).sample(reqs, n)
        how = f"{n} sampled"
    elif len(reqs) < n:
        reqs = [reqs[i % len(reqs)] for i in range(n)]
        how = f"{n} (the file's prompts repeated)"
    else:
        how = f"all {n}"
    return reqs, f"{workload.description}; {how} per level"
