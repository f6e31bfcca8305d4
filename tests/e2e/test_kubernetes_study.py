"""``autotuner run`` end to end on the kubernetes backend: the real CLI, the real ``kubernetes``
client (kubeconfig and context from the environment), the FAKE API server and kubelet of
``tests/fakes`` running every experiment's pod as the real sim engine. The results have the
same form as the local backend's for the same spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import autotuner, records, sim_spec

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from tests.fakes.cluster import fake_cluster

pytestmark = pytest.mark.slow


def _spec(backend: str | None) -> str:
    text = sim_spec(budget=4, strategy="random").replace(
        "    name: sim\n", "    name: sim\n    image: localhost/autotuner:test\n"
    )
    text = text.replace("    maxExperiments: 4\n", "    maxExperiments: 4\n    parallelism: 2\n")
    if backend is not None:
        text = text.replace("spec:\n  model:", f"spec:\n  backend: {backend}\n  model:", 1)
    return text


def _shape(value: Any) -> Any:
    """The form of a JSON value: keys and types, not values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items()) if k not in ("backend",)}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if not isinstance(value, int | float) or isinstance(value, bool) else "number"


@pytest.fixture(scope="module")
def local_records(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[str]]:
    local = tmp_path_factory.mktemp("local")
    (local / "spec.yaml").write_text(_spec(None))
    autotuner("run", "spec.yaml", "--results", "results", cwd=local)
    best = sorted(p.name for p in (local / "results" / "e2e" / "best").iterdir())
    return records(local / "results", "e2e"), best


@pytest.mark.parametrize(
    "access",
    [
        "podIP",
        # what a daemon outside the cluster uses: every connection a port-forward through the API server
        "auto",
    ],
)
def test_a_study_on_kubernetes_matches_the_local_backends_results(
    tmp_path: Path, access: str, local_records: tuple[list[dict[str, Any]], list[str]]
) -> None:
    theirs, best_local = local_records
    kube = tmp_path / "kube"
    kube.mkdir()
    (kube / "spec.yaml").write_text(_spec(f"{{kind: kubernetes, namespace: tuning, access: {access}}}"))
    # the operator lets specs use the namespace (docs/security.md)
    (kube / "policy.yaml").write_text("namespaces: [tuning]\n")
    with fake_cluster(tmp_path / "cluster") as cluster:
        env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "AUTOTUNER_KUBE_CONTEXT": cluster.context,
            "AUTOTUNER_POLICY": str(kube / "policy.yaml"),
        }
        proc = autotuner("run", "spec.yaml", "--results", "results", cwd=kube, env=env)
        assert "done: " in proc.stderr
        created = [o for o in cluster.api.received if o["kind"] == "Pod"]
        assert len(created) == 4
        assert all(p["spec"]["containers"][0]["args"][:3] == ["autotuner", "engine", "sim"] for p in created)
        assert not cluster.api.list("pods", "tuning"), "every pod was deleted"
        assert cluster.kubelet.running_pids() == []
        owner = cluster.api.get("configmaps", "tuning", "autotuner-e2e")
        assert owner is not None
        forwarded = cluster.api.count("GET", r"/portforward$", 101)
        assert (forwarded > 0) == (access == "auto")

    ours = records(kube / "results", "e2e")
    assert [r["id"] for r in ours] == ["0001", "0002", "0003", "0004"]
    assert all(r["state"] == "COMPLETE" for r in ours), [r.get("failure") for r in ours]
    assert {json.dumps(_shape(r), sort_keys=True) for r in ours} == {
        json.dumps(_shape(r), sort_keys=True) for r in theirs
    }
    for r in ours:
        assert r["simulated"] is True
        assert [p["load_value"] for p in r["loadPoints"]] == [2.0, 16.0]
        for p in r["loadPoints"]:
            assert p["metrics"]["completed"] == 24 and p["metrics"]["failed"] == 0
        assert r["backend"]["kind"] == "kubernetes"
    best_kube = sorted(p.name for p in (kube / "results" / "e2e" / "best").iterdir())
    assert best_kube == best_local
    docs = list(yaml.safe_load_all((kube / "results" / "e2e" / "best" / "deployment.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]


def test_sigkill_mid_experiment_then_restart_removes_the_orphaned_pod(tmp_path: Path) -> None:
    """The daemon process dies by SIGKILL while an experiment's pod runs; the next run takes the
    owner over at once (its own earlier incarnation, from the state directory), deletes the
    orphaned pod by label, keeps the finished record byte for byte and measures the interrupted
    configuration once."""
    kube = tmp_path / "kube"
    kube.mkdir()
    text = _spec("{kind: kubernetes, namespace: tuning, access: podIP}")
    text = text.replace("maxExperiments: 4\n    parallelism: 2\n", "maxExperiments: 3\n")
    (kube / "spec.yaml").write_text(text.replace("name: e2e", "name: crash-kube"))
    (kube / "policy.yaml").write_text("namespaces: [tuning]\n")
    results = kube / "results" / "crash-kube" / "experiments"
    with fake_cluster(tmp_path / "cluster") as cluster:
        env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "AUTOTUNER_KUBE_CONTEXT": cluster.context,
            "AUTOTUNER_POLICY": str(kube / "policy.yaml"),
        }
        crashed = autotuner(
            "run",
            "spec.yaml",
            "--results",
            "results",
            cwd=kube,
            env={**env, "AUTOTUNER_CRASH_AT": "load_point_done:3"},  # mid experiment 2
            check=False,
        )
        assert crashed.returncode == -9, crashed.stderr
        orphans = cluster.api.list("pods", "tuning")
        assert len(orphans) == 1, "kill -9 leaves the experiment's pod"
        orphan = orphans[0]["metadata"]["name"]
        assert cluster.kubelet.running_pids(), "and its engine running"
        before = {p.name: p.read_bytes() for p in results.glob("[0-9]*.json")}
        assert list(before) == ["0001.json"]

        again = autotuner("run", "spec.yaml", "--results", "results", cwd=kube, env=env)
        assert "orphaned engine" in again.stderr and orphan in again.stderr, again.stderr
        assert cluster.api.count("DELETE", f"/pods/{orphan}$") >= 1, "the restarted run deleted the orphan"
        assert not cluster.api.list("pods", "tuning"), "every pod is gone"
        assert cluster.kubelet.running_pids() == []

    after = {p.name: p.read_bytes() for p in results.glob("[0-9]*.json")}
    assert after["0001.json"] == before["0001.json"], "the finished experiment is kept byte for byte"
    recs = records(kube / "results", "crash-kube")
    assert [r["id"] for r in recs] == ["0001", "0002", "0003"]
    assert [r["state"] for r in recs] == ["COMPLETE"] * 3
    assert len({r["configHash"] for r in recs}) == 3, "the interrupted experiment ran once more, once"
