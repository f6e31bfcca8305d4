"""The kubernetes backend's failure paths, ownership and API trouble, through the real
``kubernetes`` client against the FAKE API server and kubelet of ``tests/fakes``.

Real processes run the pods (the contract suite's stand-in engine, plain Python programs); only
the API server and the kubelet are fakes.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from backends.deploy.base import EngineFailure
from backends.deploy.kubernetes import (
    L_DEPLOYMENT,
    L_SPEC,
    KubernetesBackend,
    RetryPolicy,
)
from backends.engines.base import LaunchPlan
from specs.errors import KubernetesAccessError
from tests.conftest import REPO
from tests.contract.backend_contract import http_status, standin_plan, wait_for
from tests.fakes.cluster import FakeCluster, fake_cluster
from tests.fakes.kubelet import FakeNode


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    nodes = [FakeNode(name="gpu-1", labels={"gpu": "h100"}, allocatable={"nvidia.com/gpu": 2})]
    with fake_cluster(tmp_path / "cluster", nodes=nodes, max_grace_s=1.0) as c:
        yield c


def _deploy(backend: KubernetesBackend, plan: LaunchPlan, tmp_path: Path, name: str = "exp-1") -> Any:
    return backend.deploy(
        plan,
        name=name,
        gpu_ids=[],
        log_path=tmp_path / "logs" / f"{name}.log",
        labels={"autotuner.spec": "demo", "autotuner.generation": "abc123"},
    )


def _python(code: str) -> LaunchPlan:
    """A pod whose container runs ``python -c code`` (the ``bare:test`` image has no entrypoint)."""
    plan = standin_plan("serve")
    return dataclasses.replace(plan, image="bare:test", container_args=[sys.executable, "-c", code])


def _failure(dep: Any, timeout_s: float = 20) -> EngineFailure:
    try:
        dep.wait_ready(timeout_s)
    except EngineFailure as exc:
        return exc
    raise AssertionError("wait_ready returned, but a failure was expected")


# ------------------------------------------------------------------------------------ environment


def test_image_pull_backoff_is_image_unavailable(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend()
    plan = dataclasses.replace(standin_plan("serve"), image="registry.example/nope:1")
    dep = _deploy(backend, plan, tmp_path)
    try:
        failure = _failure(dep)
        assert failure.kind == "image_unavailable"
        assert "ErrImagePull" in failure.message or "ImagePullBackOff" in failure.message
        assert 'Failed to pull image "registry.example/nope:1"' in failure.message
    finally:
        dep.teardown()


def test_unschedulable_says_why_in_the_schedulers_words(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend({"schedulingTimeout": "1s"})
    dep = _deploy(backend, standin_plan("serve", gpus=4), tmp_path)  # the node has 2
    try:
        started = time.monotonic()
        failure = _failure(dep, 30)
        assert failure.kind == "unschedulable"
        assert "0/1 nodes are available: 1 Insufficient nvidia.com/gpu" in failure.message
        assert time.monotonic() - started >= 1.0
        pod = cluster.api.get("pods", "default", "exp-1")
        assert pod is not None
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    finally:
        dep.teardown()


def test_node_selector_mismatch_is_unschedulable(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend({"schedulingTimeout": "1s", "nodeSelector": {"gpu": "b200"}})
    dep = _deploy(backend, standin_plan("serve", gpus=1), tmp_path)
    try:
        failure = _failure(dep, 30)
        assert failure.kind == "unschedulable"
        assert "didn't match Pod's node affinity/selector" in failure.message
    finally:
        dep.teardown()


def test_pods_wait_for_gpus_the_cluster_bounds_parallelism(cluster: FakeCluster, tmp_path: Path) -> None:
    """Two 2-GPU pods on a 2-GPU node: the second waits Pending (its start-up clock not running)
    until the first is gone, then starts."""
    backend = cluster.backend()
    first = _deploy(backend, standin_plan("serve", gpus=2), tmp_path, "exp-a")
    second = _deploy(backend, standin_plan("serve", gpus=2), tmp_path, "exp-b")
    try:
        first.wait_ready(30)
        threading.Timer(2.0, first.teardown).start()
        second.wait_ready(1.0)  # shorter than the queueing: queueing is not start-up time
        assert http_status(second.base_url + "/health") == 200
        events = cluster.api.list("events", "default")
        assert any(
            e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == "exp-b" for e in events
        )
    finally:
        first.teardown()
        second.teardown()


# ---------------------------------------------------------------------------------- configuration


def test_oom_killed_container_is_oom(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend({"resources": {"limits": {"memory": "64Mi"}}})
    hog = "import time\nblocks = [bytearray(16 * 2**20) for _ in range(16)]\ntime.sleep(60)\n"
    dep = _deploy(backend, _python(hog), tmp_path)
    try:
        failure = _failure(dep)
        assert failure.kind == "oom"
        assert "OOMKilled" in failure.message
        assert failure.exit_code == -9  # SIGKILL from the (fake) cgroup OOM killer
    finally:
        dep.teardown()


def test_crash_loop_back_off_is_a_startup_crash(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend(restart_policy="OnFailure")
    dep = _deploy(backend, standin_plan("exit"), tmp_path)
    try:
        failure = _failure(dep)
        assert failure.kind == "startup_crash"
        assert "CrashLoopBackOff" in failure.message
        assert failure.exit_code == 3
        assert "unknown flag --bogus-flag" in failure.log_tail
    finally:
        dep.teardown()


def test_crash_after_ready_is_crashed(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("crash-after"), tmp_path)
    try:
        dep.wait_ready(30)
        assert wait_for(lambda: not dep.alive(), 15)
        failure = dep.failure()
        assert failure.kind == "crashed"
        assert failure.exit_code == 7
    finally:
        dep.teardown()


def test_readiness_timeout_names_the_failing_probe(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("never"), tmp_path)
    try:
        started = time.monotonic()
        failure = _failure(dep, 1.5)
        assert failure.kind == "readiness_timeout"
        assert "not Ready" in failure.message
        assert time.monotonic() - started < 1.5 + 5
        assert "loading model weights" in failure.log_tail
    finally:
        dep.teardown()


# ---------------------------------------------------------------------------------------- the API


def test_429_and_500_are_retried_with_backoff(
    cluster: FakeCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="backends.deploy.kubernetes.api")
    api = cluster.api
    api.fail("POST", r"/pods$", 429, count=2)
    api.fail("POST", r"/services$", 500, count=1)
    api.fail("GET", r"/pods/exp-1$", 503, count=2)
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("serve"), tmp_path)
    try:
        dep.wait_ready(30)
        assert api.count("POST", r"/pods$", 429) == 2
        assert api.count("POST", r"/pods$", 201) == 1
        assert api.count("POST", r"/services$", 500) == 1
        assert api.count("POST", r"/services$", 201) == 1
        assert api.count("GET", r"/pods/exp-1$", 503) == 2
        # the fake's 429 says Retry-After: 1, honoured up to the policy's cap (0.5 s in tests);
        # the others back off from the base (0.05 s), doubling within one call
        retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
        waits = [m.rsplit(" ", 1)[-1] for m in retries]
        assert [m.rsplit(" ", 1)[-1] for m in retries if "HTTP 429" in m] == ["0.50s", "0.50s"], retries
        assert len(waits) == 5 and set(waits) - {"0.50s"} <= {"0.05s", "0.10s"}, retries
    finally:
        dep.teardown()


def test_backoff_doubles_to_its_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=6, base_s=0.2, cap_s=5.0)
    assert [policy.delay(a, None) for a in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert policy.delay(0, "2") == 2.0
    assert policy.delay(0, "120") == 5.0, "a server asking for minutes waits the cap"
    assert policy.delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.4, "an HTTP date falls back to backoff"


def test_an_api_that_keeps_failing_is_an_environment_failure(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.api.fail("POST", r"/pods$", 500, count=100, message="etcdserver: request timed out")
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("serve"), tmp_path)
    try:
        failure = _failure(dep)
        assert failure.kind == "environment"
        assert "create pods in namespace default still failed after 5 tries" in failure.message
        assert "etcdserver: request timed out" in failure.message
    finally:
        dep.teardown()


def test_403_names_the_missing_permission(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.api.forbid("create", "pods")
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("serve"), tmp_path)
    try:
        failure = _failure(dep)
        assert failure.kind == "environment"
        assert "may not create pods in namespace default (HTTP 403)" in failure.message
        assert "cannot create resource" in failure.message
        assert failure.hint is not None and "rbac.yaml" in failure.hint
        assert cluster.api.count("POST", r"/pods$", 403) == 1, "a 403 is not retried"
    finally:
        dep.teardown()


def test_403_at_orphan_cleanup_is_an_access_error(cluster: FakeCluster) -> None:
    cluster.api.forbid("list", "pods")
    backend = cluster.backend()
    with pytest.raises(KubernetesAccessError, match="may not list pods in namespace default"):
        backend.cleanup_orphans()


def test_a_wrong_token_is_an_access_error(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.api.token = "rotated"
    backend = cluster.backend()
    with pytest.raises(KubernetesAccessError, match="HTTP 401"):
        backend.cleanup_orphans()


def test_a_conflicting_owner_update_is_retried(cluster: FakeCluster, tmp_path: Path) -> None:
    first = cluster.backend(daemon_id="daemon-a")
    first.cleanup_orphans()
    first.teardown_all()  # stops its heartbeat; its claim on the owner is left as a dead daemon's
    cluster.api.fail("PATCH", r"/configmaps/autotuner-contract$", 409, count=1)
    second = cluster.backend(daemon_id="daemon-a")
    assert second.cleanup_orphans() == []
    owner = cluster.api.get("configmaps", "default", "autotuner-contract")
    assert owner is not None
    assert owner["metadata"]["annotations"]["autotuner.dev/holder"] == second.incarnation
    assert cluster.api.count("PATCH", r"/configmaps/autotuner-contract$", 409) == 1
    second.teardown_all()


# -------------------------------------------------------------------------------- ownership, labels


def test_objects_are_labelled_owned_and_hold_no_secret(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K8S_TEST_TOKEN_SOURCE", "hf_sEcReT_value_0123")
    backend = cluster.backend()
    plan = standin_plan(
        "serve", env_from={"HF_TOKEN": "K8S_TEST_TOKEN_SOURCE"}, files={"extra.yaml": "a: 1\n"}
    )
    dep = _deploy(backend, plan, tmp_path)
    try:
        dep.wait_ready(30)
        api = cluster.api
        owner = api.get("configmaps", "default", "autotuner-contract")
        assert owner is not None
        objects = [
            *api.list("pods", "default", f"{L_DEPLOYMENT}=exp-1"),
            *api.list("services", "default", f"{L_DEPLOYMENT}=exp-1"),
            *api.list("secrets", "default", f"{L_DEPLOYMENT}=exp-1"),
            *api.list("configmaps", "default", f"{L_DEPLOYMENT}=exp-1"),
        ]
        assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Pod", "Secret", "Service"]
        for obj in objects:
            meta = obj["metadata"]
            assert meta["labels"][L_SPEC] == "contract"
            assert meta["labels"]["autotuner.spec"] == "demo"
            assert meta["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
            if obj["kind"] != "Secret":
                assert "hf_sEcReT_value_0123" not in str(obj)
        pod = objects[0] if objects[0]["kind"] == "Pod" else next(o for o in objects if o["kind"] == "Pod")
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "exp-1-env", "key": "HF_TOKEN"}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
        # deleting the owner deletes everything it owns (the garbage collector)
        api.delete("configmaps", "default", "autotuner-contract")
        assert wait_for(lambda: not api.list("pods", "default", f"{L_DEPLOYMENT}=exp-1"), 10)
        assert not api.list("services", "default", f"{L_DEPLOYMENT}=exp-1")
        assert not api.list("secrets", "default", f"{L_DEPLOYMENT}=exp-1")
    finally:
        dep.teardown()


def test_teardown_removes_every_object(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("serve", files={"x.yaml": "x\n"}), tmp_path)
    dep.wait_ready(30)
    dep.teardown()
    for plural in ("pods", "services", "configmaps", "secrets"):
        assert not cluster.api.list(plural, "default", f"{L_DEPLOYMENT}=exp-1"), plural
    assert cluster.kubelet.running_pids() == []


def test_a_restarted_daemon_removes_its_orphans_by_label(cluster: FakeCluster, tmp_path: Path) -> None:
    crashed = cluster.backend(daemon_id="daemon-a", heartbeat_s=0.2)
    dep = _deploy(crashed, standin_plan("serve"), tmp_path, "orphan-1")
    dep.wait_ready(30)
    crashed._stop.set()  # the process "dies": no teardown, no more heartbeats; its pod runs on
    url = dep.base_url + "/health"
    assert http_status(url) == 200
    restarted = cluster.backend(daemon_id="daemon-a")
    assert restarted.cleanup_orphans() == ["orphan-1"]
    assert cluster.api.get("pods", "default", "orphan-1") is None
    assert not cluster.api.list("services", "default", f"{L_DEPLOYMENT}=orphan-1")
    assert http_status(url, timeout=1.0) is None
    assert restarted.cleanup_orphans() == []


def test_a_live_daemons_pods_are_left_alone_until_its_heartbeat_stops(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    live = cluster.backend(daemon_id="daemon-a", heartbeat_s=0.2, heartbeat_ttl_s=1.5)
    dep = _deploy(live, standin_plan("serve"), tmp_path, "busy-1")
    dep.wait_ready(30)
    other = cluster.backend(daemon_id="daemon-b", heartbeat_ttl_s=1.5)
    assert other.cleanup_orphans() == []
    assert dep.alive()
    live._stop.set()  # now it dies
    time.sleep(2.0)
    assert other.cleanup_orphans() == ["busy-1"]
    assert not dep.alive()
    other.teardown_all()


# ------------------------------------------------------------------------- the daemon's own Role


def _role_rules() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "rbac.yaml").read_text())
    role = next(d for d in docs if d["kind"] == "Role")
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def test_the_minimal_role_is_enough_for_a_whole_experiment_life(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/kubernetes/rbac.yaml grants exactly what the backend does: with only its rules, a
    daemon deploys (secret, files, pod, service), waits, reads logs and events, tears down, and a
    restarted one removes orphans, without a single 403."""
    cluster.api.allow_only(_role_rules())
    monkeypatch.setenv("K8S_ROLE_TEST_SECRET", "role-test-secret-value")
    crashed = cluster.backend(daemon_id="d1")
    assert crashed.cleanup_orphans() == []
    plan = standin_plan("serve", env_from={"HF_TOKEN": "K8S_ROLE_TEST_SECRET"}, files={"x.yaml": "x\n"})
    done = _deploy(crashed, plan, tmp_path, "role-1")
    done.wait_ready(30)
    assert done.alive()
    done.teardown()
    failing = _deploy(crashed, dataclasses.replace(standin_plan("serve"), image="nope:1"), tmp_path, "role-2")
    assert _failure(failing).kind == "image_unavailable"
    failing.teardown()
    orphan = _deploy(crashed, plan, tmp_path, "role-3")
    orphan.wait_ready(30)
    crashed._stop.set()
    restarted = cluster.backend(daemon_id="d1")
    assert restarted.cleanup_orphans() == ["role-3"]
    assert cluster.api.get("secrets", "default", "role-3-env") is None
    assert cluster.api.count("GET", ".", 403) + cluster.api.count("POST", ".", 403) == 0
    assert cluster.api.count("DELETE", ".", 403) + cluster.api.count("PATCH", ".", 403) == 0


def test_the_daemons_cluster_manifests_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
    folder = REPO / "deploy" / "kubernetes"
    kinds = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            listed = yaml.safe_load(path.read_text())["resources"]
            assert sorted(listed) == sorted(p.name for p in folder.glob("*.yaml") if p.name != path.name)
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            kv.validate(doc, "1.37.0", strict=True)
            kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(
        [
            "Deployment",
            "Namespace",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",
            "Secret",
            "ServiceAccount",
        ]
    )


def test_a_foreign_object_of_the_same_name_is_left_alone(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.api.create("services", "default", {"metadata": {"name": "exp-1", "labels": {"team": "other"}}})
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("serve"), tmp_path)
    try:
        failure = _failure(dep)
        assert failure.kind == "environment"
        assert "services exp-1 already exists in namespace default and is not a leftover" in failure.message
    finally:
        dep.teardown()
    foreign = cluster.api.get("services", "default", "exp-1")
    assert foreign is not None and foreign["metadata"]["labels"] == {"team": "other"}, (
        "teardown left it alone"
    )
    assert cluster.api.get("pods", "default", "exp-1") is None, "but removed the pod it had created"


def test_an_own_leftover_of_the_same_name_is_replaced(cluster: FakeCluster, tmp_path: Path) -> None:
    dead = cluster.backend(daemon_id="d1")
    old = _deploy(dead, standin_plan("serve"), tmp_path)
    old.wait_ready(30)
    dead._stop.set()
    backend = cluster.backend(daemon_id="d2")  # never ran cleanup_orphans: finds the leftover itself
    dep = _deploy(backend, standin_plan("serve"), tmp_path)
    try:
        dep.wait_ready(30)
        pod = cluster.api.get("pods", "default", "exp-1")
        assert (
            pod is not None and pod["metadata"]["labels"]["autotuner.dev/incarnation"] == backend.incarnation
        )
    finally:
        dep.teardown()


def test_a_pod_deleted_behind_our_back_is_an_environment_failure(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("never"), tmp_path)
    try:
        assert wait_for(lambda: cluster.kubelet.running_pids() != [], 10)
        cluster.api.delete("pods", "default", "exp-1")
        failure = _failure(dep)
        assert failure.kind == "environment"
        assert "deleted by someone else" in failure.message
    finally:
        dep.teardown()


def test_an_api_outage_while_waiting_is_an_environment_failure(cluster: FakeCluster, tmp_path: Path) -> None:
    backend = cluster.backend()
    dep = _deploy(backend, standin_plan("never"), tmp_path)
    try:
        cluster.api.fail("GET", r"/pods/exp-1$", 503, count=100)
        failure = _failure(dep)
        assert failure.kind == "environment"
        assert "get pods in namespace default still failed after 5 tries" in failure.message
    finally:
        cluster.api.faults.clear()
        dep.teardown()


def test_port_forward_reaches_the_engine_through_the_api_server(cluster: FakeCluster, tmp_path: Path) -> None:
    """access: portForward (what auto picks outside the cluster): every connection to the local
    listener is a WebSocket port-forward stream through the (fake) API server."""
    backend = cluster.backend({"access": "portForward"})
    dep = _deploy(backend, standin_plan("serve", ready_delay=0.5), tmp_path)
    try:
        dep.wait_ready(30)
        assert dep.base_url.startswith("http://127.0.0.1:")
        assert str(dep.plan.port) not in dep.base_url, "the local port is the forwarder's, not the pod's"
        for _ in range(3):
            assert http_status(dep.base_url + "/v1/models") == 200
        assert cluster.api.count("GET", r"/pods/exp-1/portforward$", 101) >= 4
    finally:
        dep.teardown()
    assert http_status(dep.base_url + "/health", timeout=1.0) is None
