"""Synthetic workloads: lengths follow the distribution, prompts are deterministic, fingerprints
are stable and change with anything that reaches the engine."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backends.workloads import DatasetError, Workload, build_workload
from backends.workloads import synthetic as synthetic_module
from backends.workloads.synthetic import WORDS, synthetic_requests
from specs.errors import UserError
from specs.model import SyntheticDataset

REPO = Path(__file__).resolve().parents[3]


def _dataset(**overrides: Any) -> SyntheticDataset:
    body: dict[str, Any] = {
        "kind": "synthetic",
        "input": {"mean": 64},
        "output": {"mean": 16},
        "numPrompts": 50,
    }
    body.update(overrides)
    return SyntheticDataset.model_validate(body)


def _build(dataset: SyntheticDataset, seed: int = 7, tmp: Path = Path("/nonexistent")) -> Workload:
    # synthetic workloads touch neither the base folder nor the cache
    return build_workload(dataset, seed=seed, base_dir=tmp, cache_dir=tmp)


def test_fixed_lengths_and_word_counts() -> None:
    w = _build(_dataset())
    assert len(w.requests) == 50
    assert w.kind == "synthetic" and w.name == "synthetic"
    for r in w.requests:
        words = r.prompt.split()
        assert len(words) == r.input_tokens == 64
        assert set(words) <= set(WORDS)
        assert r.max_tokens == 16
    assert (w.stats.input.mean, w.stats.input.min, w.stats.input.max) == (64.0, 64, 64)
    assert w.stats.output.mean == 16.0
    assert w.description == "synthetic: 50 prompts, input fixed(64), output fixed(16), seed 7"


def test_prompts_differ_from_each_other() -> None:
    w = _build(_dataset())
    assert len({r.prompt for r in w.requests}) == 50


def test_same_seed_same_requests_and_fingerprint() -> None:
    a, b = _build(_dataset(), seed=3), _build(_dataset(), seed=3)
    assert a.requests == b.requests
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 64


def test_other_seed_other_prompts_and_fingerprint() -> None:
    a, b = _build(_dataset(), seed=3), _build(_dataset(), seed=4)
    assert a.requests != b.requests
    assert a.fingerprint != b.fingerprint


def test_normal_lengths_have_the_requested_mean_and_spread() -> None:
    w = _build(_dataset(input={"mean": 500, "stddev": 50}, numPrompts=3000))
    lengths = [len(r.prompt.split()) for r in w.requests]
    assert statistics.fmean(lengths) == pytest.approx(500, abs=5)
    assert statistics.pstdev(lengths) == pytest.approx(50, rel=0.08)


def test_uniform_lengths_are_mean_plus_minus_stddev_sqrt3() -> None:
    w = _build(_dataset(output={"mean": 200, "stddev": 20, "distribution": "uniform"}, numPrompts=3000))
    lengths = [r.max_tokens for r in w.requests]
    half = 20 * math.sqrt(3)
    assert min(lengths) >= round(200 - half) and max(lengths) <= round(200 + half)
    assert statistics.fmean(lengths) == pytest.approx(200, abs=2)
    assert statistics.pstdev(lengths) == pytest.approx(20, rel=0.08)
    # flat: each tenth of the range holds about a tenth of the draws
    width = 2 * half / 10
    buckets = [
        sum(1 for x in lengths if 200 - half + i * width <= x < 200 - half + (i + 1) * width)
        for i in range(10)
    ]
    assert min(buckets) > 150


def test_lengths_are_clipped_to_min_max_and_at_least_one() -> None:
    w = _build(_dataset(input={"mean": 100, "stddev": 80, "min": 60, "max": 130}, numPrompts=500))
    lengths = [r.input_tokens for r in w.requests]
    assert min(lengths) == 60 and max(lengths) == 130  # type: ignore[type-var]
    w = _build(_dataset(output={"mean": 2, "stddev": 10}, numPrompts=500))
    assert min(r.max_tokens for r in w.requests) == 1


def test_shared_prefix_starts_every_prompt() -> None:
    w = _build(_dataset(input={"mean": 40, "stddev": 10}, sharedPrefix=16, numPrompts=100))
    prefixes = {tuple(r.prompt.split()[:16]) for r in w.requests}
    assert len(prefixes) == 1
    assert len({tuple(r.prompt.split()[16:]) for r in w.requests}) == 100
    assert "shared prefix 16" in w.description


def test_prompts_are_never_only_the_shared_prefix() -> None:
    w = _build(_dataset(input={"mean": 8}, sharedPrefix=20, numPrompts=10))
    assert {r.input_tokens for r in w.requests} == {21}
    assert len({r.prompt for r in w.requests}) == 10


def test_output_distribution_does_not_change_the_prompts() -> None:
    a = _build(_dataset(output={"mean": 16}))
    b = _build(_dataset(output={"mean": 300, "stddev": 30}))
    assert [r.prompt for r in a.requests] == [r.prompt for r in b.requests]
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"numPrompts": 51},
        {"input": {"mean": 65}},
        {"input": {"mean": 64, "min": 70}},
        {"output": {"mean": 17}},
        {"sharedPrefix": 4},
    ],
)
def test_any_change_changes_the_fingerprint(change: dict[str, Any]) -> None:
    assert _build(_dataset(**change)).fingerprint != _build(_dataset()).fingerprint


def test_an_explicit_default_distribution_is_the_same_workload() -> None:
    implicit = _build(_dataset(input={"mean": 64, "stddev": 4}))
    explicit = _build(_dataset(input={"mean": 64, "stddev": 4, "distribution": "normal"}))
    assert implicit.fingerprint == explicit.fingerprint


def test_fingerprint_is_the_same_in_another_process_with_another_hash_seed(tmp_path: Path) -> None:
    script = (
        "import json, sys; from pathlib import Path\n"
        "from backends.workloads import build_workload\n"
        "from specs.model import SyntheticDataset\n"
        "d = SyntheticDataset.model_validate(json.loads(sys.argv[1]))\n"
        "print(build_workload(d, seed=11, base_dir=Path('.'), cache_dir=Path('.')).fingerprint)\n"
    )
    body = {"kind": "synthetic", "input": {"mean": 64, "stddev": 9}, "output": {"mean": 16}, "numPrompts": 50}
    prints = {
        subprocess.run(
            [sys.executable, "-c", script, json.dumps(body)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    here = _build(SyntheticDataset.model_validate(body), seed=11).fingerprint
    assert prints == {here}


def test_too_many_words_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic_module, "MAX_TOTAL_WORDS", 1000)
    with pytest.raises(DatasetError, match="above the limit of 1,000") as info:
        _build(_dataset())
    assert isinstance(info.value, UserError)
    assert "numPrompts" in str(info.value)


def test_record_is_json_and_holds_the_fingerprint() -> None:
    w = _build(_dataset())
    record = json.loads(json.dumps(w.to_record()))
    assert record["fingerprint"] == w.fingerprint
    assert record["stats"]["numRequests"] == 50
    assert record["stats"]["inputTokens"] == {"mean": 64.0, "min": 64, "max": 64}


def test_synthetic_prompts() -> None:
    reqs = synthetic_requests(50, input_len=32, output_len=16, seed=4)
    assert len(reqs) == 50
    assert all(len(r.prompt.split()) == 32 == r.input_tokens for r in reqs)
    assert all(r.max_tokens == 16 for r in reqs)
    assert len({r.prompt for r in reqs}) == 50  # no shared prompts for a prefix cache to exploit
    assert reqs == synthetic_requests(50, input_len=32, output_len=16, seed=4)


def test_synthetic_lengths_vary_with_stddev_and_stay_positive() -> None:
    reqs = synthetic_requests(300, input_len=4, output_len=8, input_stddev=4, output_stddev=8, seed=1)
    ins = [len(r.prompt.split()) for r in reqs]
    outs = [r.max_tokens for r in reqs]
    assert min(ins) >= 1 and min(outs) >= 1
    assert len(set(ins)) > 3 and len(set(outs)) > 3
