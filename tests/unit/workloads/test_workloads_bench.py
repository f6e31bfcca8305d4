"""The prompts of ``autotuner bench`` come from the same workload builder as a spec's."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.workloads.bench import bench_prompts
from specs.errors import UserError


def test_synthetic_prompts_are_reproducible_for_a_seed() -> None:
    a, described = bench_prompts(12, seed=3, input_len=16, output_len=8)
    b, _ = bench_prompts(12, seed=3, input_len=16, output_len=8)
    assert len(a) == 12 and [r.prompt for r in a] == [r.prompt for r in b]
    assert all(r.max_tokens == 8 for r in a)
    assert "synthetic" in described


def test_file_prompts_sampled_or_repeated_to_the_count(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text("".join(f'{{"prompt": "question {i}"}}\n' for i in range(5)))
    few, how = bench_prompts(3, seed=1, input_len=1, output_len=4, dataset=f)
    assert len(few) == 3 and "3 sampled" in how
    many, how = bench_prompts(8, seed=1, input_len=1, output_len=4, dataset=f)
    assert len(many) == 8 and "repeated" in how
    with pytest.raises(UserError, match="no such file"):
        bench_prompts(3, seed=1, input_len=1, output_len=4, dataset=tmp_path / "missing.jsonl")
