"""The docker backend's own failure paths and container settings, for real against Podman.

What the shared contract cannot state for every backend: an image that is not there, a
container engine that does not answer, a memory-limit kill, the GPU ``DeviceRequest`` sent to
the engine, labels, mounts, host networking, and the containers a killed process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.deploy.base import EngineFailure
from backends.deploy.docker import LABEL_DEPLOYMENT, DockerBackend, container_name
from backends.deploy.gpus import discover_gpus
from backends.deploy.leases import GpuLeaser
from specs.errors import UserError
from specs.model import DockerBackend as DockerSettings
from tests.contract.backend_contract import http_status, standin_plan
from tests.podman import REPO, Podman

pytestmark = pytest.mark.slow


@pytest.fixture
def make_backend(tmp_path: Path, podman: Podman) -> Iterator[Any]:
    made: list[DockerBackend] = []

    def make(**kwargs: Any) -> DockerBackend:
        options: dict[str, Any] = {
            "base_url": podman.base_url,
            "mounts": podman.mounts,
            "hf_cache": False,
            "grace_s": 1.0,
            "poll_interval_s": 0.05,
        }
        options.update(kwargs)
        backend = DockerBackend(tmp_path / "state", **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def _deploy(backend: DockerBackend, plan: Any, tmp_path: Path, name: str, **kwargs: Any) -> Any:
    return backend.deploy(
        plan,
        name=name,
        gpu_ids=kwargs.pop("gpu_ids", []),
        log_path=tmp_path / f"{name}.log",
        labels=kwargs.pop("labels", {"autotuner.spec": "docker-test"}),
    )


def test_a_missing_image_is_an_environment_failure_naming_the_image(
    make_backend: Any, tmp_path: Path
) -> None:
    backend = make_backend()
    image = "localhost/autotuner-test-absent:0"
    dep = _deploy(backend, standin_plan("serve", host="0.0.0.0", image=image), tmp_path, "no-image")
    with pytest.raises(EngineFailure) as info:
        dep.wait_ready(60)
    assert info.value.kind == "image_unavailable"
    assert image in info.value.message
    assert "pull or build it" in (info.value.hint or "")
    assert image in info.value.log_tail, "the log says what happened too"
    assert not dep.alive()
    dep.teardown()


def test_an_unreachable_container_engine_is_an_environment_failure(
    make_backend: Any, tmp_path: Path, podman: Podman
) -> None:
    backend = make_backend(base_url=f"unix://{tmp_path}/nothing-listens.sock")
    assert backend.cleanup_orphans() == []
    dep = _deploy(backend, standin_plan("serve", image=podman.standin_image), tmp_path, "no-engine")
    with pytest.raises(EngineFailure) as info:
        dep.wait_ready(30)
    assert info.value.kind == "environment"
    assert "not reachable" in info.value.message
    dep.teardown()


def test_a_memory_limit_kill_is_oom_with_the_reason(
    make_backend: Any, tmp_path: Path, podman: Podman
) -> None:
    backend = make_backend(settings=DockerSettings(kind="docker", memory="96m"))
    dep = _deploy(backend, standin_plan("hog", host="0.0.0.0", image=podman.standin_image), tmp_path, "hog")
    with pytest.raises(EngineFailure) as info:
        dep.wait_ready(60)
    failure = info.value
    assert failure.kind == "oom"
    assert "memory limit" in failure.message and "96m" in failure.message
    assert failure.exit_code == -signal.SIGKILL
    assert "holding" in failure.log_tail, "the engine's own output up to the kill"
    # the same container without a limit is not an oom: the limit is what makes exit 137 one
    plain = _deploy(
        make_backend(), standin_plan("exit", host="0.0.0.0", image=podman.standin_image), tmp_path, "plain"
    )
    with pytest.raises(EngineFailure) as plain_info:
        plain.wait_ready(60)
    assert plain_info.value.kind == "startup_crash"


def test_the_device_request_carries_exactly_the_leased_gpus(
    make_backend: Any, tmp_path: Path, podman: Podman, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU here: the fake inventory's lease gives the ids, and what reaches the container
    engine is read back from the API: the create request as sent and the container's config."""
    leaser = GpuLeaser(discover_gpus("4xH100"), lock_dir=tmp_path / "locks")
    first = leaser.acquire(1)
    lease = leaser.acquire(2)
    assert first is not None and lease is not None
    ids = list(lease.ids)
    assert len(ids) == 2 and not set(ids) & set(first.ids) and ids != [0, 1]

    client = podman.client()
    sent: list[dict[str, Any]] = []

    def record(response: Any, *args: Any, **kwargs: Any) -> None:
        request = response.request
        if request.method == "POST" and "/containers/create" in request.url:
            sent.append(json.loads(request.body))

    client.api.hooks["response"].append(record)
    monkeypatch.setenv("DOCKER_TEST_SECRET_SOURCE", "hf_secretvalue-for-the-label-check")
    backend = make_backend(client=client)
    plan = standin_plan(
        "serve",
        gpus=2,
        host="0.0.0.0",
        image=podman.standin_image,
        env={"PLAIN": "visible"},
        env_from={"HF_TOKEN": "DOCKER_TEST_SECRET_SOURCE"},
    )
    labels = {"autotuner.spec": "gpu-spec", "autotuner.generation": "abc123", "autotuner.experiment": "gpu-1"}
    dep = _deploy(backend, plan, tmp_path, "gpu-1", gpu_ids=ids, labels=labels)
    dep.wait_ready(60)
    lease.release()
    first.release()

    assert len(sent) == 1
    assert sent[0]["HostConfig"]["DeviceRequests"] == [
        {
            "Driver": "nvidia",
            "Count": 0,
            "DeviceIDs": [str(i) for i in ids],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]
    attrs = client.containers.get(container_name("gpu-1")).attrs
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(map(str, ids))
    assert env["PLAIN"] == "visible"
    assert env["HF_TOKEN"] == "hf_secretvalue-for-the-label-check", "the engine gets its secret"
    # the plan's variables, the fixed base (a UTF-8 locale) and the backend's GPU/stdout settings;
    # the rest is the image's and the runtime's own (PATH from the image, HOME, HOSTNAME, TERM,
    # container): never the daemon's
    ours = {"PLAIN", "HF_TOKEN", "NVIDIA_VISIBLE_DEVICES", "PYTHONUNBUFFERED", "LANG", "LC_ALL"}
    assert set(env) - ours <= {"PATH", "HOME", "HOSTNAME", "TERM", "container"}, env
    got = attrs["Config"]["Labels"]
    assert {k: got[k] for k in labels} == labels
    assert got["autotuner.managed-by"] == "autotuner"
    assert got[LABEL_DEPLOYMENT] == "gpu-1"
    assert got["autotuner.owner"].split("/")[1] == str(os.getpid())
    assert not any("secretvalue" in v for v in got.values()), "no secret in labels"
    assert "secretvalue" not in dep.log_tail(200)
    dep.teardown()
    client.close()


def test_host_networking_and_mounts(make_backend: Any, tmp_path: Path, podman: Podman) -> None:
    data = tmp_path / "allowed" / "models"
    data.mkdir(parents=True)
    (data / "weights.txt").write_text("fake weights\n")
    with pytest.raises(UserError, match=r"volumes\[0\].*outside the roots"):
        make_backend(
            settings=DockerSettings(kind="docker", volumes=["/etc:/host-etc:ro"]),
            allowed_volume_roots=[tmp_path / "allowed"],
        )
    backend = make_backend(
        settings=DockerSettings(kind="docker", network="host", volumes=[f"{data}:/models:ro"]),
        allowed_volume_roots=[tmp_path / "allowed"],
    )
    assert backend.bind_host == "127.0.0.1"
    dep = _deploy(backend, standin_plan("serve", image=podman.standin_image), tmp_path, "hostnet")
    dep.wait_ready(60)
    assert http_status(dep.base_url + "/health") == 200
    with contextlib.closing(podman.client()) as client:
        attrs = client.containers.get(container_name("hostnet")).attrs
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/models"]["Source"] == str(data) and mounts["/models"]["RW"] is False
    dep.teardown()


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from backends.deploy.container import Mount
    from backends.deploy.docker import DockerBackend
    from tests.contract.backend_contract import standin_plan
    mounts = [Mount(*m) for m in {mounts!r}]
    backend = DockerBackend(Path({state!r}), base_url={url!r}, mounts=mounts, hf_cache=False)
    plan = standin_plan("serve", host="0.0.0.0", image={image!r})
    dep = backend.deploy(plan, name="orphan-1", gpu_ids=[], log_path=Path({log!r}), labels={{}})
    dep.wait_ready(60)
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_containers_of_a_killed_process_are_removed_by_label(
    make_backend: Any, tmp_path: Path, podman: Podman
) -> None:
    script = ORPHAN_SCRIPT.format(
        repo=str(REPO),
        mounts=[(m.source, m.target, m.read_only) for m in podman.mounts],
        state=str(tmp_path / "state"),
        url=podman.base_url,
        image=podman.standin_image,
        log=str(tmp_path / "orphan.log"),
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "ready" in proc.stdout
    left = podman.containers(**{LABEL_DEPLOYMENT: "orphan-1"})
    assert [c.status for c in left] == ["running"], "kill -9 leaves the container running"

    backend = make_backend()
    live = _deploy(
        backend, standin_plan("serve", host="0.0.0.0", image=podman.standin_image), tmp_path, "live-1"
    )
    live.wait_ready(60)
    assert backend.cleanup_orphans() == ["orphan-1"]
    assert podman.containers(**{LABEL_DEPLOYMENT: "orphan-1"}) == []
    assert live.alive(), "a container of a live process is never an orphan"
    assert backend.cleanup_orphans() == []
    live.teardown()
    assert podman.containers(**{LABEL_DEPLOYMENT: "live-1"}) == []
