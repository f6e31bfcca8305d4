"""The FAKE Kubernetes API server behaves like the real one where the backend relies on it:
through the real ``kubernetes`` client, a watch from a resourceVersion, 409s, 410, selectors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from kubernetes import client, watch

from tests.fakes.kube_api import FakeKubeApiServer, match_labels

MERGE = "application/merge-patch+json"


@pytest.fixture
def core() -> Iterator[tuple[FakeKubeApiServer, Any]]:
    with FakeKubeApiServer() as api:
        config = client.Configuration(host=api.url, api_key={"authorization": f"Bearer {api.token}"})
        yield api, client.CoreV1Api(client.ApiClient(config))


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def test_create_conflicts_and_label_selectors(core: tuple[FakeKubeApiServer, Any]) -> None:
    _, api = core
    api.create_namespaced_config_map("ns", _cm("a", app="x", tier="1"))
    api.create_namespaced_config_map("ns", _cm("b", app="y"))
    with pytest.raises(client.ApiException) as info:
        api.create_namespaced_config_map("ns", _cm("a"))
    assert info.value.status == 409

    def names(selector: str) -> list[str]:
        items = api.list_namespaced_config_map("ns", label_selector=selector).items
        return sorted(i.metadata.name for i in items)

    assert names("app=x") == ["a"]
    assert names("app!=x") == ["b"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b"]
    assert names("app in (x,y)") == ["a", "b"]


def test_patch_with_a_stale_resource_version_is_a_conflict(core: tuple[FakeKubeApiServer, Any]) -> None:
    _, api = core
    created = api.create_namespaced_config_map("ns", _cm("a"))
    rv = created.metadata.resource_version
    fresh = {"metadata": {"resourceVersion": rv, "annotations": {"x": "1"}}}
    api.patch_namespaced_config_map("a", "ns", fresh, _content_type=MERGE)
    with pytest.raises(client.ApiException) as info:
        stale = {"metadata": {"resourceVersion": rv, "annotations": {"x": "2"}}}
        api.patch_namespaced_config_map("a", "ns", stale, _content_type=MERGE)
    assert info.value.status == 409
    assert api.read_namespaced_config_map("a", "ns").metadata.annotations == {"x": "1"}


def test_watch_from_a_resource_version_sees_only_later_changes(core: tuple[FakeKubeApiServer, Any]) -> None:
    _, api = core
    api.create_namespaced_config_map("ns", _cm("before"))
    rv = api.list_namespaced_config_map("ns").metadata.resource_version
    api.create_namespaced_config_map("ns", _cm("after"))
    api.delete_namespaced_config_map("after", "ns")
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            api.list_namespaced_config_map, "ns", resource_version=rv, timeout_seconds=1
        )
    ]
    assert seen == [("ADDED", "after"), ("DELETED", "after")]


def test_a_too_old_resource_version_is_gone(core: tuple[FakeKubeApiServer, Any]) -> None:
    fake, api = core
    api.create_namespaced_config_map("ns", _cm("a"))
    with fake.lock:
        del fake.history[:]  # history compacted, as etcd does
        fake.create("configmaps", "ns", _cm("b"))
    with pytest.raises(client.ApiException) as info:
        list(
            watch.Watch().stream(
                api.list_namespaced_config_map, "ns", resource_version="1", timeout_seconds=1
            )
        )
    assert info.value.status == 410


def test_garbage_collection_follows_owner_references(core: tuple[FakeKubeApiServer, Any]) -> None:
    _, api = core
    owner = api.create_namespaced_config_map("ns", _cm("owner"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    api.create_namespaced_config_map(
        "ns", {**_cm("child"), "metadata": {"name": "child", "ownerReferences": [ref]}}
    )
    api.delete_namespaced_config_map("owner", "ns")
    assert [i.metadata.name for i in api.list_namespaced_config_map("ns").items] == []


def test_selector_parsing() -> None:
    assert match_labels("a=1,b in (2, 3)", {"a": "1", "b": "3"})
    assert not match_labels("a=1,b notin (2,3)", {"a": "1", "b": "3"})
