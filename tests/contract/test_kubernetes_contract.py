"""The kubernetes backend runs the shared deploy-backend contract, through the real ``kubernetes``
client, against the FAKE API server and kubelet of ``tests/fakes`` (no real cluster runs here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from tests.contract.backend_contract import BackendContract, StandinFactory, standin_plan
from tests.fakes.cluster import FakeCluster, fake_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path / "cluster", max_grace_s=1.0) as c:
        yield c


class TestKubernetesBackendContract(BackendContract):
    pins_gpu_ids = False

    @pytest.fixture
    def backend(self, cluster: FakeCluster) -> Any:
        return cluster.backend()

    @pytest.fixture
    def standin(self) -> StandinFactory:
        """The stand-in engine as an image whose entrypoint is the script; ``missing`` runs a program
        the image does not have (the container cannot start)."""

        def make(mode: str, **kwargs: Any) -> Any:
            plan = standin_plan(mode, **kwargs)
            if mode == "missing":
                return dataclasses.replace(plan, image="bare:test", container_args=list(plan.argv))
            return plan

        return make  # type: ignore[return-value]
