"""``autotuner plan`` on a kubernetes spec shows the manifests of its first experiment (text and
``--json``), built by the backend's own manifest builder, and they validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main

EXAMPLE = Path(__file__).parents[3] / "specs" / "examples" / "trtllm.yaml"


def test_plan_prints_the_first_experiments_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLE), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "kubernetes manifests of the first experiment" in out
    docs = list(
        yaml.safe_load_all(out.split("kubernetes manifests of the first experiment", 1)[1].split("\n", 1)[1])
    )
    assert [d["kind"] for d in docs] == ["Secret", "Pod", "Service"]
    pod = docs[1]
    assert pod["metadata"]["namespace"] == "llm-tuning"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["spec"]["containers"][0]["image"] == "nvcr.io/nvidia/tensorrt-llm/release:1.0.0"
    assert docs[0]["stringData"] == {"HF_TOKEN": "<value of HF_TOKEN in the daemon's environment>"}


def test_plan_json_includes_the_manifests_as_objects(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLE), "-n", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    kinds = [m["kind"] for m in data["manifests"]]
    assert kinds == ["Secret", "Pod", "Service"]
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
    for obj in data["manifests"]:
        kv.validate(obj, "1.37.0", strict=True)


def test_a_local_spec_has_no_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    example = EXAMPLE.parent / "sglang-quant-parallel.yaml"
    assert main(["plan", str(example), "-n", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifests"] == []


def test_a_kubernetes_spec_without_an_image_is_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "apiVersion: autotuner/v1\nkind: TuningSpec\nmetadata: {name: k}\nspec:\n"
        "  model: {id: llama-3-8b}\n  engine:\n    name: sim\n  backend: {kind: kubernetes}\n"
        "  workload:\n    dataset: {kind: synthetic, input: {mean: 10}, output: {mean: 5}}\n"
        "    load: {concurrency: [1]}\n"
    )
    (tmp_path / "k.yaml").write_text(text)
    assert main(["validate", str(tmp_path / "k.yaml")]) == 1
    out = capsys.readouterr()
    assert "k.yaml:6: spec.engine.image: the kubernetes backend runs the engine from a container image" in (
        out.out + out.err
    )
