"""One builder for a container: the SDK keyword arguments and ``docker run`` say the same thing,
each engine's image entrypoint is respected, and ``best/docker-run.sh`` is that builder's line."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from backends.deploy.container import CONTAINER_HF_HOME, CONTAINER_WORKDIR, container_config, parse_volume
from backends.deploy.registry import BackendRequest, backend_kinds, get_backend
from backends.engines import get_engine
from reconciler.artifacts import render
from specs.errors import UserError
from specs.model import DockerBackend as DockerSettings
from specs.model import TuningSpec
from specs.records import ExperimentRecord

pytest.importorskip("docker", reason="the docker extra is part of dev")


def spec_of(engine: str, backend: dict[str, Any] | None = None, **engine_fields: Any) -> TuningSpec:
    return TuningSpec.model_validate(
        {
            "apiVersion": "autotuner/v1",
            "kind": "TuningSpec",
            "metadata": {"name": "c"},
            "spec": {
                "model": {"id": "Qwen/Qwen2.5-7B-Instruct"},
                "engine": {"name": engine, "env": {"HF_TOKEN": {"fromEnv": "HF_TOKEN"}}, **engine_fields},
                "backend": backend or {"kind": "docker"},
                "workload": {
                    "dataset": {"kind": "synthetic", "input": {"mean": 100}, "output": {"mean": 10}},
                    "load": {"concurrency": [1]},
                },
                "objectives": [{"metric": "output_throughput", "direction": "maximize"}],
            },
        }
    )


@pytest.mark.parametrize(
    ("engine", "image", "command"),
    [
        ("vllm", "vllm/vllm-openai:v0.11.0", ["Qwen/Qwen2.5-7B-Instruct"]),
        ("sglang", "lmsysorg/sglang:v0.5.2", ["python3", "-m", "sglang.launch_server", "--model-path"]),
        ("trtllm", "nvcr.io/nvidia/tensorrt-llm/release:1.0.0", ["trtllm-serve", "Qwen/Qwen2.5-7B-Instruct"]),
    ],
)
def test_the_image_entrypoint_is_respected(engine: str, image: str, command: list[str]) -> None:
    version = {"vllm": "0.11.0", "sglang": "0.5.2", "trtllm": "1.0.0"}[engine]
    spec = spec_of(engine, version=version)
    plan = get_engine(engine).launch(spec, {}, host="0.0.0.0", port=8123)
    assert plan.image == image, "the official image of engine.version when the spec names none"
    config = container_config(plan, image=plan.image, settings=DockerSettings(kind="docker"), gpu_ids=[0])
    assert list(config.command[: len(command)]) == command
    argv = config.argv()
    after = argv[argv.index(image) + 1 :]
    assert after == list(config.command)
    assert "serve" not in after[:1], "vllm/vllm-openai already runs vllm serve"


def test_sdk_kwargs_and_argv_say_the_same_thing() -> None:
    spec = spec_of("vllm", version="0.11.0")
    plan = get_engine("vllm").launch(spec, {}, host="0.0.0.0", port=8123)
    settings = DockerSettings(kind="docker", shmSize="8g", memory="64g", volumes=["/data/models:/models:ro"])
    config = container_config(
        plan,
        image="vllm/vllm-openai:v0.11.0",
        settings=settings,
        gpu_ids=[2, 5],
        labels={"autotuner.spec": "c"},
        name="autotuner-c-1",
        hf_cache="/srv/hf",
        model_paths=["/data/local-model"],
        files_dir="/state/work/c-1",
    )
    kwargs = config.sdk_kwargs({"HF_TOKEN": "hf_value"})
    argv = config.argv()
    assert kwargs["environment"]["HF_TOKEN"] == "hf_value"
    assert "hf_value" not in " ".join(argv) and argv[argv.index("HF_TOKEN") - 1 :][:2] == ["-e", "HF_TOKEN"]
    assert kwargs["device_requests"][0]["DeviceIDs"] == ["2", "5"]
    assert argv[argv.index("--gpus") + 1] == '"device=2,5"'
    assert kwargs["environment"]["NVIDIA_VISIBLE_DEVICES"] == "2,5"
    assert kwargs["ports"] == {"8123/tcp": ("127.0.0.1", 8123)} and "127.0.0.1:8123:8123" in argv
    assert kwargs["shm_size"] == "8g" and "--shm-size=8g" in argv
    assert kwargs["mem_limit"] == "64g" and "--memory=64g" in argv
    assert kwargs["labels"] == {"autotuner.spec": "c"} and "autotuner.spec=c" in argv
    mounts = {m["Target"]: (m["Source"], m["ReadOnly"]) for m in kwargs["mounts"]}
    assert mounts == {
        CONTAINER_HF_HOME: ("/srv/hf", False),
        "/data/local-model": ("/data/local-model", True),
        "/models": ("/data/models", True),
        CONTAINER_WORKDIR: ("/state/work/c-1", True),
    }
    for target, (source, ro) in mounts.items():
        assert f"{source}:{target}:{'ro' if ro else 'rw'}" in argv
    assert kwargs["working_dir"] == CONTAINER_WORKDIR and argv[argv.index("-w") + 1] == CONTAINER_WORKDIR
    assert kwargs["environment"]["HF_HOME"] == CONTAINER_HF_HOME


def test_host_ipc_and_network_and_no_gpus() -> None:
    spec = spec_of("sglang", image="lmsysorg/sglang:dev")
    plan = get_engine("sglang").launch(spec, {}, host="127.0.0.1", port=30000)
    config = container_config(
        plan,
        image="lmsysorg/sglang:dev",
        settings=DockerSettings(kind="docker", ipc="host", network="host"),
        gpu_ids=[],
    )
    kwargs = config.sdk_kwargs({"HF_TOKEN": "x"})
    assert kwargs["network_mode"] == "host" and "ports" not in kwargs
    assert kwargs["ipc_mode"] == "host" and "shm_size" not in kwargs, "Docker refuses shm_size with ipc host"
    assert "device_requests" not in kwargs
    assert kwargs["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void", "an image's 'all' must not apply"
    assert "--network=host" in config.argv() and not any(a.startswith("--shm-size") for a in config.argv())


def test_volumes_are_checked_in_the_spec() -> None:
    for bad in ["relative:/x", "/a:/b:rx", "/a/../etc:/b", "/a"]:
        with pytest.raises(ValueError, match="volume"):
            DockerSettings(kind="docker", volumes=[bad])
    with pytest.raises(ValueError, match="size"):
        DockerSettings(kind="docker", memory="lots")
    assert parse_volume("/a:/b").read_only is False and parse_volume("/a:/b:ro").read_only is True


def test_docker_run_artifact_is_the_builders_line() -> None:
    spec = spec_of("vllm", version="0.11.0", backend={"kind": "docker", "ipc": "host", "memory": "32g"})
    record = ExperimentRecord.model_validate(
        {
            "toolVersion": "test",
            "id": "0001",
            "spec": "c",
            "generation": spec.generation(),
            "state": "COMPLETE",
            "config": {},
            "configHash": "h",
        }
    )
    files = render(spec, record)
    lines = files["docker-run.sh"].strip().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert 'HF_CACHE="${HF_CACHE:-$HOME/.cache/huggingface}"' in lines
    plan = get_engine("vllm").launch(spec, {}, host="0.0.0.0", port=8000)
    expected = container_config(
        plan,
        image="vllm/vllm-openai:v0.11.0",
        settings=spec.spec.backend,  # type: ignore[arg-type]
        gpu_ids=[0],
        publish_ip=None,
        hf_cache="$HF_CACHE",
    ).argv()
    assert shlex.split(lines[-1]) == expected, "the shell expands $HF_CACHE; the rest is literal"
    assert "--ipc=host" in expected and "--memory=32g" in expected


def test_the_registry_names_every_kind_and_refuses_unknown_ones(tmp_path: Path) -> None:
    assert {"local", "docker"} <= set(backend_kinds())
    spec = spec_of("sim", backend={"kind": "docker"})
    with pytest.raises(UserError, match=r"no 'dockr' deploy backend in this version.*did you mean 'docker'"):
        get_backend("dockr", BackendRequest(spec=spec, state_dir=tmp_path))
    backend = get_backend("docker", BackendRequest(spec=spec, state_dir=tmp_path))
    assert backend.kind == "docker" and backend.bind_host == "0.0.0.0"
    bad = spec_of("sim", backend={"kind": "docker", "volumes": ["/etc:/etc-host:ro"]})
    with pytest.raises(UserError, match="outside the roots the operator allows"):
        get_backend("docker", BackendRequest(spec=bad, state_dir=tmp_path))
    allowed = get_backend(
        "docker", BackendRequest(spec=bad, state_dir=tmp_path, allowed_volume_roots=(Path("/etc"),))
    )
    assert allowed.kind == "docker"


def test_an_engine_without_an_official_image_needs_one_for_docker(tmp_path: Path) -> None:
    from reconciler.checking import load_checked
    from specs.errors import SpecError

    text = (
        "apiVersion: autotuner/v1\nkind: TuningSpec\nmetadata: {name: s}\nspec:\n"
        "  model: {id: llama-3-8b}\n  engine: {name: sim}\n  backend: {kind: docker}\n"
        "  workload:\n    dataset: {kind: synthetic, input: {mean: 10}, output: {mean: 5}}\n"
        "    load: {concurrency: [1]}\n"
    )
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError) as info:
        load_checked(tmp_path / "s.yaml")
    [problem] = info.value.problems
    assert problem.line == 6 and "set engine.image" in problem.message
    (tmp_path / "s.yaml").write_text(text.replace("{name: sim}", "{name: sim, image: localhost/sim:1}"))
    assert load_checked(tmp_path / "s.yaml").spec.spec.engine.image == "localhost/sim:1"


def test_a_backend_registers_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.deploy import registry
    from specs.errors import MissingExtraError

    made: list[BackendRequest] = []

    def factory(request: BackendRequest) -> Any:
        made.append(request)
        return get_backend("local", request)

    monkeypatch.setitem(registry._REGISTRY, "elsewhere", registry.BackendType("elsewhere", factory))
    spec = spec_of("sim", backend={"kind": "local"})
    backend = get_backend("elsewhere", BackendRequest(spec=spec, state_dir=tmp_path))
    assert backend.kind == "local" and made[0].spec is spec
    missing = registry.BackendType("needs-extra", factory, extra="cluster", module="autotuner_no_such_module")
    monkeypatch.setitem(registry._REGISTRY, "needs-extra", missing)
    with pytest.raises(MissingExtraError, match="autotuner_no_such_module") as info:
        get_backend("needs-extra", BackendRequest(spec=spec, state_dir=tmp_path))
    assert info.value.hint == "pip install 'autotuner[cluster]'"


def test_the_docs_docker_example_is_valid_and_its_container_is_what_the_page_says() -> None:
    from specs.space import grid
    from tests.unit.deploy.docs_examples import backends_page_example

    spec = backends_page_example("## Docker")
    settings = spec.spec.backend
    assert isinstance(settings, DockerSettings)
    assert (settings.ipc, settings.memory, settings.network) == ("host", "96g", "bridge")
    configs = list(grid(spec))
    assert len(configs) == 6
    plan = get_engine("vllm").launch(spec, dict(configs[0]), host="0.0.0.0", port=8000)
    assert plan.image == "vllm/vllm-openai:v0.11.0", "the page's comment on engine.version"
    kwargs = container_config(plan, image=plan.image, settings=settings, gpu_ids=[0]).sdk_kwargs(
        {"HF_TOKEN": "x"}
    )
    assert kwargs["ipc_mode"] == "host" and kwargs["mem_limit"] == "96g"
    assert kwargs["ports"] == {"8000/tcp": ("127.0.0.1", 8000)}, "published on 127.0.0.1 only"
