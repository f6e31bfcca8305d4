"""The docker backend runs the shared deploy-backend contract, against Podman's Docker API.

The stand-in engine runs inside a real container (an offline image whose entrypoint is the
stand-in, the host's Python mounted read-only, see ``tests/podman.py``), published on a loopback
port of the bridge network, which is why it listens on 0.0.0.0 inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.deploy.docker import DockerBackend
from tests.contract.backend_contract import BackendContract, StandinFactory, standin_plan
from tests.podman import Podman

pytestmark = pytest.mark.slow


class TestDockerBackendContract(BackendContract):
    gpu_env = "NVIDIA_VISIBLE_DEVICES"
    no_gpu_value = "void"

    @pytest.fixture
    def backend(self, tmp_path: Path, podman: Podman) -> Iterator[DockerBackend]:
        backend = DockerBackend(
            tmp_path / "state",
            base_url=podman.base_url,
            mounts=podman.mounts,
            hf_cache=False,
            grace_s=1.0,
            poll_interval_s=0.05,
        )
        yield backend
        backend.close()

    @pytest.fixture
    def standin(self, podman: Podman) -> StandinFactory:
        def make(mode: str, **kwargs: Any) -> Any:
            image = podman.python_image if mode == "missing" else podman.standin_image
            return standin_plan(mode, host="0.0.0.0", image=image, **kwargs)

        return make
