"""Every manifest the kubernetes backend or ``best/`` produces validates against the schemas of a
recent Kubernetes release (``kubernetes-validate``, pinned in the dev extra; it ships the schemas,
so this runs offline)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from backends.deploy import kube_manifests as m
from backends.engines.base import LaunchPlan
from specs.model import KubernetesBackend as KubernetesSettings
from tests.contract.backend_contract import standin_plan

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")

#: the Kubernetes release whose schemas the manifests must satisfy
K8S_VERSION = "1.37.0"

FULL = {
    "kind": "kubernetes",
    "namespace": "tuning",
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
                        ]
                    }
                ]
            }
        }
    },
    "runtimeClassName": "nvidia",
    "imagePullSecrets": ["regcred"],
    "serviceAccount": "engine",
    "modelCachePvc": "hf-cache",
    "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "128Gi"}},
    "shmSize": "32Gi",
}


def validate(obj: dict[str, Any]) -> None:
    kv.validate(obj, K8S_VERSION, strict=True)


def _plan(**changes: Any) -> LaunchPlan:
    plan = standin_plan(
        "serve", gpus=2, env={"VLLM_LOGGING_LEVEL": "INFO"}, env_from={"HF_TOKEN": "HF_TOKEN"}
    )
    return dataclasses.replace(plan, files={"conf/extra.yaml": "a: 1\n"}, **changes)


@pytest.mark.parametrize(
    "settings", [{"kind": "kubernetes"}, FULL, {"kind": "kubernetes", "modelCacheHostPath": "/data/hf"}]
)
def test_experiment_objects_validate(settings: dict[str, Any]) -> None:
    opts = KubernetesSettings.model_validate(settings)
    plan = _plan()
    labels = {"autotuner.dev/spec": "s", "autotuner.dev/deployment": "exp-1"}
    owner = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "autotuner-s", "uid": "0f0e-1"}]
    pod = m.experiment_pod(
        opts,
        plan,
        name="exp-1",
        image="vllm/vllm-openai:v0.11.0",
        labels=labels,
        owner=owner,
        secret_name="exp-1-env",
        files_name="exp-1-files",
    )
    objects = [
        pod,
        m.experiment_service(opts, plan, name="exp-1", labels=labels, selector=labels, owner=owner),
        m.files_configmap(plan, name="exp-1-files", namespace=opts.namespace, labels=labels, owner=owner),
        m.secret_env(
            {"HF_TOKEN": "x"}, name="exp-1-env", namespace=opts.namespace, labels=labels, owner=owner
        ),
    ]
    for obj in objects:
        validate(obj)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["args"] == plan.container_args
    assert pod["spec"]["restartPolicy"] == "Never"
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}} in pod["spec"][
        "volumes"
    ]


def test_full_settings_reach_the_pod() -> None:
    opts = KubernetesSettings.model_validate(FULL)
    spec = m.pod_spec(opts, _plan(), image="img:1", secret_name="s", files_name="f")
    assert spec["nodeSelector"] == FULL["nodeSelector"]
    assert spec["tolerations"][1]["tolerationSeconds"] == 60
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["serviceAccountName"] == "engine"
    assert spec["affinity"] == FULL["affinity"]
    mounts = {v["mountPath"] for v in spec["containers"][0]["volumeMounts"]}
    assert mounts == {"/dev/shm", m.WORKDIR, "/root/.cache/huggingface"}
    assert spec["containers"][0]["resources"]["requests"]["cpu"] == "8"


def test_a_cpu_pod_sees_no_gpu() -> None:
    opts = KubernetesSettings(kind="kubernetes")
    pod = m.pod_spec(opts, standin_plan("serve"), image="img:1")
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "resources" not in pod["containers"][0]


def test_best_deployment_yaml_validates(tmp_path: Path) -> None:
    from reconciler.artifacts import render
    from specs.loader import load_spec_text
    from specs.records import ExperimentRecord

    spec_text = (Path(__file__).parents[3] / "specs" / "examples" / "trtllm.yaml").read_text()
    spec = load_spec_text(spec_text, "trtllm.yaml").spec
    config = {
        "max_batch_size": 64,
        "max_num_tokens": 4096,
        "kv_cache_free_gpu_memory_fraction": 0.9,
        "parallel.tp": 4,
    }
    record = ExperimentRecord.model_validate(
        {
            "toolVersion": "test",
            "id": "0001",
            "spec": spec.name,
            "generation": spec.generation(),
            "config": config,
            "configHash": "x",
            "state": "COMPLETE",
        }
    )
    files = render(spec, record)
    docs = [d for d in yaml.safe_load_all(files["deployment.yaml"]) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[-2:] == ["Deployment", "Service"]
    pod = docs[-2]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert "kubectl create secret generic llama3-70b-trtllm-env" in files["deployment.yaml"]
    for doc in docs:
        validate(doc)


def test_everything_the_backend_sends_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")
    from tests.fakes.cluster import fake_cluster

    monkeypatch.setenv("HF_TOKEN", "hf_manifest_test_value")
    with fake_cluster(tmp_path / "cluster") as cluster:
        backend = cluster.backend(FULL | {"access": "podIP", "modelCachePvc": None}, active_deadline_s=4200.5)
        dep = backend.deploy(
            _plan(), name="exp-1", gpu_ids=[], log_path=tmp_path / "exp-1.log", labels={"autotuner.spec": "s"}
        )
        dep.teardown()
        sent = cluster.api.received
    assert sorted(o["kind"] for o in sent) == ["ConfigMap", "ConfigMap", "Pod", "Secret", "Service"]
    for obj in sent:
        validate(obj)
    pod = next(o for o in sent if o["kind"] == "Pod")
    assert pod["spec"]["activeDeadlineSeconds"] == 4200


def test_the_docs_example_spec_is_valid_and_its_manifests_validate() -> None:
    from reconciler.planning import first_experiment_manifests
    from specs.space import grid
    from tests.unit.deploy.docs_examples import backends_page_example

    spec = backends_page_example("A full example spec:")
    first = next(iter(grid(spec, limit=1)))
    for obj in first_experiment_manifests(spec, dict(first)):
        validate(obj)
