"""``autotuner run`` with ``backend: {kind: docker}``: the sim engine inside real containers,
through the docker SDK, against Podman (see ``tests/podman.py``).

The image is made offline (``FROM scratch``, the host's Python mounted read-only by the
operator's ``AUTOTUNER_DOCKER_MOUNTS``), and the engine is the same ``autotuner engine sim`` the
local backend runs as a process, so the two backends' records can be compared field by field.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import autotuner, records, sim_spec
from tests.podman import Podman

pytestmark = pytest.mark.slow


def docker_spec(name: str, image: str, *, budget: int, strategy: str = "grid") -> str:
    text = sim_spec(name=name, budget=budget, strategy=strategy)
    text = text.replace("  engine:\n    name: sim\n", f"  engine:\n    name: sim\n    image: {image}\n")
    return text + "  backend: {kind: docker, startupTimeout: 60s}\n"


def shape(value: Any) -> Any:
    """The form of a JSON value: keys and types, not the numbers."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__ if value is not None else None


def test_a_study_runs_the_sim_engine_in_containers_like_the_local_backend(
    tmp_path: Path, podman: Podman
) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "docker").mkdir()
    (tmp_path / "local" / "spec.yaml").write_text(sim_spec(name="e2e-local", budget=2, strategy="grid"))
    (tmp_path / "docker" / "spec.yaml").write_text(docker_spec("e2e-docker", podman.python_image, budget=2))
    autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path / "local")
    proc = autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path / "docker", env=podman.env())
    assert "done: 2 complete" in proc.stderr, proc.stderr

    local = records(tmp_path / "local" / "results", "e2e-local")
    docker = records(tmp_path / "docker" / "results", "e2e-docker")
    assert [r["state"] for r in docker] == ["COMPLETE", "COMPLETE"]
    assert [r["config"] for r in docker] == [r["config"] for r in local]
    for d, lo in zip(docker, local, strict=True):
        assert d["backend"] == {"kind": "docker"} and lo["backend"] == {"kind": "local"}
        assert d["engine"]["image"] == podman.python_image
        # identical in form: the same fields, metrics and load points as the local backend's
        d_shape, l_shape = shape(d), shape(lo)
        d_shape["engine"]["image"] = l_shape["engine"]["image"]
        assert d_shape == l_shape
        assert [p["load_value"] for p in d["loadPoints"]] == [2.0, 16.0]
        for p in d["loadPoints"]:
            assert p["metrics"]["completed"] == 24 and p["metrics"]["failed"] == 0
        # the engine listened on every address of its own namespace, reached on a loopback port
        assert d["command"][d["command"].index("--host") + 1] == "0.0.0.0"
    assert podman.containers(**{"autotuner.spec": "e2e-docker"}) == [], "every container removed"

    best = tmp_path / "docker" / "results" / "e2e-docker" / "best"
    run = shlex.split((best / "docker-run.sh").read_text().strip().splitlines()[-1])
    assert run[:3] == ["docker", "run", "--rm"]
    image_at = run.index(podman.python_image)
    assert run[image_at + 1 : image_at + 4] == ["autotuner", "engine", "sim"]
    assert "--shm-size=16g" in run and "-e" in run and "NVIDIA_VISIBLE_DEVICES=void" in run

    planned = autotuner("plan", "spec.yaml", "-n", "1", cwd=tmp_path / "docker").stdout
    assert "in a container: docker run --rm -p 8000:8000 --ipc=private" in planned
    assert f"{podman.python_image} autotuner engine sim" in planned


def test_sigkill_mid_experiment_then_restart_removes_the_orphan_and_loses_nothing(
    tmp_path: Path, podman: Podman
) -> None:
    (tmp_path / "spec.yaml").write_text(docker_spec("crash-docker", podman.python_image, budget=3))
    results = tmp_path / "results"
    crashed = autotuner(
        "run",
        "spec.yaml",
        "--results",
        "results",
        cwd=tmp_path,
        env={**podman.env(), "AUTOTUNER_CRASH_AT": "load_point_done:3"},  # mid experiment 2
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr
    orphans = podman.containers(**{"autotuner.spec": "crash-docker"})
    assert [c.status for c in orphans] == ["running"], "kill -9 leaves the experiment's container"
    before = {p.name: p.read_bytes() for p in (results / "crash-docker" / "experiments").glob("[0-9]*.json")}
    assert list(before) == ["0001.json"]

    again = autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path, env=podman.env())
    assert "orphaned engine" in again.stderr and orphans[0].labels["autotuner.deployment"] in again.stderr
    after = {p.name: p.read_bytes() for p in (results / "crash-docker" / "experiments").glob("[0-9]*.json")}
    assert after["0001.json"] == before["0001.json"], "the completed experiment is kept byte for byte"
    recs = records(results, "crash-docker")
    assert [r["id"] for r in recs] == ["0001", "0002", "0003"]
    assert [r["state"] for r in recs] == ["COMPLETE"] * 3
    assert len({r["configHash"] for r in recs}) == 3, "the interrupted experiment ran once more, once"
    assert podman.containers(**{"autotuner.spec": "crash-docker"}) == []
