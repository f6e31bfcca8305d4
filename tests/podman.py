"""A real container engine for the docker backend's tests: Podman behind the Docker Engine API.

No fake Docker API: the tests drive the real ``docker`` SDK against ``podman system service``
on a private socket, started once per session by the :func:`podman` fixture and stopped at the
end, with every container the session made removed (``podman ps -a`` stays as it was). The
fixture skips, with the reason, only where Podman is not installed; CI installs it (``.ci/run``).

Images cannot be pulled here (no registry), so the fixture builds two offline: ``FROM scratch``
with nothing but ``PATH`` (and, for the stand-in, an entrypoint), and every container mounts the
host's own Python read-only (``/usr``, ``/lib``, ``/lib64``, ``/bin``, the interpreter this venv
was made from, and the project tree with its venv). So the sim engine (``autotuner engine sim``)
and the contract's stand-in engine run inside real containers with no download.

Settings this sandbox needs (see ``/etc/containers/containers.conf`` written by ``.ci/run``):
runc rather than crun on cgroups v1 hybrid hosts, and default ulimits below the hard limits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backends.deploy import procs
from backends.deploy.container import Mount
from tests.contract.backend_contract import STANDIN

PODMAN = shutil.which("podman")
REPO = Path(__file__).resolve().parent.parent
SKIP_REASON = "podman is not installed (apt-get install podman runc; .ci/run does it)"


def host_python_mounts() -> tuple[Mount, ...]:
    """Read-only mounts that make this interpreter, its venv and the project run in a container."""
    paths = ["/usr", "/lib", "/lib64", "/bin"]
    for extra in (sys.base_prefix, sys.prefix, str(REPO)):
        if not any(extra == p or extra.startswith(p + "/") for p in paths):
            paths.append(extra)
    # a folder inside another mounted one needs no mount of its own
    kept = [p for p in paths if os.path.exists(p)]
    kept = [p for p in kept if not any(p != q and p.startswith(q + "/") for q in kept)]
    return tuple(Mount(p, p, read_only=True) for p in kept)


@dataclass(frozen=True)
class Podman:
    base_url: str
    #: no entrypoint; ``PATH`` finds this venv's ``autotuner`` first
    python_image: str
    #: entrypoint: the contract's stand-in engine, run by this interpreter
    standin_image: str
    mounts: tuple[Mount, ...]

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.base_url)

    def env(self) -> dict[str, str]:
        """What an ``autotuner`` subprocess needs to use this engine and these images."""
        return {
            "DOCKER_HOST": self.base_url,
            "AUTOTUNER_DOCKER_MOUNTS": ",".join(m.spec() for m in self.mounts),
        }

    def containers(self, **labels: str) -> list[Any]:
        """Containers of the autotuner (with these labels too), running or not."""
        wanted = ["autotuner.managed-by=autotuner", *(f"{k}={v}" for k, v in labels.items())]
        with contextlib.closing(self.client()) as client:
            found: list[Any] = client.containers.list(all=True, filters={"label": wanted})
        return found


def _build(tag: str, containerfile: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "marker").write_text("an image made offline for the docker backend's tests\n")
    (folder / "Containerfile").write_text(containerfile)
    assert PODMAN is not None
    argv = [PODMAN, "build", "-q", "-t", tag, str(folder)]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


def _wait_for_socket(base_url: str, service: procs.SpawnedProcess, timeout_s: float = 30.0) -> None:
    import docker

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ended = service.exit_info()
        if ended is not None:
            raise RuntimeError(f"podman system service {ended.describe()}")
        if not Path(base_url.removeprefix("unix://")).exists():
            # a failed connect in the SDK's constructor leaks its socket: wait for the file first
            time.sleep(0.05)
            continue
        try:
            with contextlib.closing(docker.DockerClient(base_url=base_url)) as client:
                client.ping()
            return
        except docker.errors.DockerException:
            time.sleep(0.1)
    raise RuntimeError(f"podman system service did not answer on {base_url} within {timeout_s:g} s")


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    if PODMAN is None:
        pytest.skip(SKIP_REASON)
    pytest.importorskip("docker", reason="the docker extra is part of dev: pip install -e '.[dev]'")
    folder = tmp_path_factory.mktemp("podman")
    sock = folder / "podman.sock"
    base_url = f"unix://{sock}"
    # the project's one spawner: its parent-death signal stops the service even if pytest is
    # killed, so no session leaves a service running
    service = procs.spawn(
        [PODMAN, "system", "service", "--time=0", base_url],
        env=os.environ,
        log_path=folder / "service.log",
        name="podman-service",
        pid_dir=None,
        # the runtime drops an empty ``oom`` marker in its working folder when a container is
        # killed for memory (test_a_memory_limit_kill_is_oom_with_the_reason): not the checkout
        cwd=folder,
    )
    tag = f"{os.getpid()}-{int(time.time())}"
    python_image = f"localhost/autotuner-test-python:{tag}"
    standin_image = f"localhost/autotuner-test-standin:{tag}"
    path = f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    try:
        _wait_for_socket(base_url, service)
        base = f"FROM scratch\nCOPY marker /autotuner-test\nENV PATH={path}\n"
        _build(python_image, base, folder / "python")
        _build(
            standin_image,
            f'FROM {python_image}\nENTRYPOINT ["{sys.executable}", "{STANDIN}"]\n',
            folder / "standin",
        )
        yield Podman(
            base_url=base_url,
            python_image=python_image,
            standin_image=standin_image,
            mounts=host_python_mounts(),
        )
    finally:
        try:
            _remove_leftovers(base_url)
        except Exception as exc:  # the service may have died: still stop it and close the log
            print(f"podman fixture: could not remove leftover containers: {exc}", file=sys.stderr)
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(
                [PODMAN, "rmi", "-f", python_image, standin_image], capture_output=True, timeout=60
            )
        service.stop(grace_s=10.0)


def _remove_leftovers(base_url: str) -> None:
    """Containers of this session's processes (this one and the ``autotuner`` runs it started)."""
    import docker

    me = os.getpid()
    client = docker.DockerClient(base_url=base_url)
    found = client.containers.list(all=True, filters={"label": "autotuner.managed-by=autotuner"})
    for c in found:
        labels = c.labels or {}
        owner = labels.get("autotuner.owner", "")
        try:
            _, pid, start = owner.split("/")
            identity = procs.ProcessIdentity(pid=int(pid), start_time=int(start), boot_id=owner.split("/")[0])
        except ValueError:
            continue
        if labels.get("autotuner.host") != socket.gethostname():
            continue
        if identity.pid == me or not procs.is_running(identity):
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)
    client.close()
