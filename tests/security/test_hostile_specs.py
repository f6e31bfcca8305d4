"""Hostile spec *values*, all pushed at once next to one good spec, then one real reconcile pass.

Each hostile spec must be Stalled with a located message (``file:line: field: message``) that
says what to do, the good spec must finish, and nothing may leak or change outside the daemon's
folders (:meth:`HostileRepo.assert_contained`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import sim_spec
from tests.security.hostile import QUICK, HostileRepo, good_spec

pytestmark = pytest.mark.slow

DATASET = "dataset: {kind: synthetic, input: {mean: 200, stddev: 20}, output: {mean: 40}}"


def spec(name: str, old: str = "", new: str = "") -> str:
    text = sim_spec(name, strategy="grid", budget=1, parameters=QUICK)
    assert old in text, old
    return text.replace(old, new, 1)


def dataset(name: str, path: str, kind: str = "csv") -> str:
    return spec(name, DATASET, f"dataset: {{kind: {kind}, path: '{path}', output: {{mean: 8}}}}")


def env(name: str, body: str) -> str:
    return spec(name, "    name: sim\n", f"    name: sim\n    env: {body}\n")


PATH_ = "spec.workload.dataset.path"
LOADER = "allowLoaderEnv"

#: name -> (spec text, the field the problem must name, a fragment of its message)
CASES: dict[str, tuple[str, str, str]] = {
    "abs-dataset": (dataset("abs-dataset", "/etc/passwd"), "spec.workload.dataset.path", "outside"),
    "dotdot-dataset": (
        dataset("dotdot-dataset", "../../../../../../etc/passwd"),
        "spec.workload.dataset.path",
        "outside",
    ),
    "proc-environ": (dataset("proc-environ", "/proc/self/environ"), PATH_, "dataRoots"),
    "dev-zero": (dataset("dev-zero", "/dev/zero", "jsonl"), "spec.workload.dataset.path", "dataRoots"),
    "symlinked-dataset": (
        dataset("symlinked-dataset", "data/environ.csv"),
        "spec.workload.dataset.path",
        "outside",
    ),
    "pythonpath": (env("pythonpath", "{PYTHONPATH: evil}"), "spec.engine.env.PYTHONPATH", "allowLoaderEnv"),
    "path-var": (env("path-var", "{PATH: 'bin:/usr/bin'}"), "spec.engine.env.PATH", "allowLoaderEnv"),
    "ld-preload": (env("ld-preload", "{LD_PRELOAD: evil/x.so}"), "spec.engine.env.LD_PRELOAD", LOADER),
    "hf-endpoint": (
        env("hf-endpoint", "{HF_ENDPOINT: 'https://evil.example.com'}"),
        "spec.engine.env.HF_ENDPOINT",
        "allowLoaderEnv",
    ),
    "token-by-reference": (
        env("token-by-reference", "{HF_TOKEN: {fromEnv: AUTOTUNER_GIT_TOKEN}}"),
        "spec.engine.env.HF_TOKEN.fromEnv",
        "secretEnv",
    ),
    "huge-seed": (
        spec("huge-seed", "seed: 5", "seed: 99999999999999999999999999999"),
        "spec.search.seed",
        "less than or equal to 4294967295",
    ),
    "huge-time-scale": (
        spec("huge-time-scale", "time-scale: 50", "time-scale: 1.0e+308"),
        "spec.engine.args.time-scale",
        "out of range",
    ),
    "huge-concurrency": (
        spec("huge-concurrency", "concurrency: [2, 16]", "concurrency: [100000]"),
        "spec.workload.load.concurrency[0]",
        "maxConcurrency",
    ),
    "infinite-rate": (
        spec("infinite-rate", "{concurrency: [2, 16]}", "{requestRate: [.inf]}"),
        "spec.workload.load.requestRate[0]",
        "finite",
    ),
    "parallelism-64": (
        spec("parallelism-64", "seed: 5", "seed: 5\n    parallelism: 64"),
        "spec.search.parallelism",
        "maxParallelism",
    ),
    "infinite-timeout": (
        spec("infinite-timeout", "seed: 5", "seed: 5\n    experimentTimeout: .inf"),
        "spec.search.experimentTimeout",
        "too long",
    ),
}


def test_hostile_values_are_refused_located_and_the_good_spec_finishes(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    repo.write("specs/good.yaml", good_spec())
    for name, (text, _, _) in CASES.items():
        repo.write(f"specs/{name}.yaml", text)
    # a committed symlink to the daemon's environment, and code a loader variable would run
    repo.symlink("data/environ.csv", "/proc/self/environ")
    marker = repo.decoy / "pwned"
    repo.write("evil/sitecustomize.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    repo.write("evil/x.so", b"\x7fELF not really")
    repo.write("bin/python3", f"#!/bin/sh\ntouch {marker}\n")
    # denial of service: a 2 MB spec, and an alias bomb that yaml.safe_load would expand
    repo.write("specs/oversized.yaml", "# " + "x" * (2 * 1024 * 1024) + "\n")
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i, prev in zip("bcdefghij", "abcdefghi", strict=True):
        bomb += f"{i}: &{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
    repo.write("specs/bomb.yaml", bomb)
    repo.commit_push("hostile specs")

    proc = repo.reconcile("--labels", "zone=a")
    assert proc.returncode == 1  # stalled specs make a one-shot pass exit 1

    repo.assert_ready("good")
    for name, (_, field, fragment) in CASES.items():
        stalled = repo.condition(name, "Stalled")
        assert stalled["status"] == "True", name
        problems = repo.status(name)["problems"]
        located = [p for p in problems if p["path"] == field]
        assert located, f"{name}: no problem at {field}: {problems}"
        assert located[0]["file"] == f"specs/{name}.yaml" and located[0]["line"], name
        assert fragment in located[0]["message"], f"{name}: {located[0]['message']}"
    oversized = repo.status("oversized")["problems"]
    assert "larger than 1024 KiB" in oversized[0]["message"]
    assert repo.condition("bomb", "Stalled")["status"] == "True"
    assert not marker.exists(), "committed code ran on the host"
    repo.assert_contained()
