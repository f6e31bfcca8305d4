"""A FAKE cluster for tests: the fake API server, its fake kubelet, and a kubeconfig for them."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.contract.backend_contract import STANDIN
from tests.fakes.kube_api import FakeKubeApiServer
from tests.fakes.kubelet import FakeImage, FakeKubelet, FakeNode, sim_image

#: images the fake kubelet can "pull"
IMAGES: dict[str, FakeImage] = {
    "standin:test": FakeImage(entrypoint=[sys.executable, str(STANDIN)]),
    "bare:test": FakeImage(),
    "localhost/autotuner:test": sim_image(),
}


@dataclass
class FakeCluster:
    api: FakeKubeApiServer
    kubelet: FakeKubelet
    kubeconfig: Path
    context: str = "fake"

    def backend(
        self, settings: Mapping[str, Any] | None = None, *, spec_name: str = "contract", **kwargs: Any
    ) -> Any:
        """A kubernetes backend on this cluster through the real client (kubeconfig + context)."""
        from backends.deploy.kubernetes import KubernetesBackend, RetryPolicy
        from specs.model import KubernetesBackend as KubernetesSettings

        opts = KubernetesSettings.model_validate(
            {"kind": "kubernetes", "access": "podIP", **(settings or {})}
        )
        kwargs.setdefault("retry", RetryPolicy(attempts=5, base_s=0.05, cap_s=0.5))
        kwargs.setdefault("state_dir", self.kubeconfig.parent / "state")
        kwargs.setdefault("poll_interval_s", 0.1)
        kwargs.setdefault("grace_s", 1.0)
        return KubernetesBackend(
            opts,
            spec_name=spec_name,
            kubeconfig=str(self.kubeconfig),
            context=self.context,
            in_cluster=False,
            **kwargs,
        )


@contextmanager
def fake_cluster(
    tmp_path: Path, *, nodes: Sequence[FakeNode] = (FakeNode(),), **kubelet_kwargs: Any
) -> Iterator[FakeCluster]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    with FakeKubeApiServer() as api:
        kubelet = FakeKubelet(api, images=IMAGES, nodes=nodes, root=tmp_path / "kubelet", **kubelet_kwargs)
        with kubelet:
            yield FakeCluster(api, kubelet, api.kubeconfig(tmp_path / "kubeconfig"))
