"""``spec.backend``: where experiments run (this host, a container engine, a Kubernetes
cluster). One model per kind, chosen by the ``kind`` discriminator, so that a docker-only field
in a local spec is an error, not a silent no-op."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, field_validator, model_validator

from specs.durations import Duration
from specs.model.base import StrictModel, dns_label

Gpus = Literal["auto"] | StrictInt | list[StrictInt]


class _BackendBase(StrictModel):
    gpus: Gpus = Field(default="auto", description="'auto', a count, or a list of device ids.")
    startup_timeout: Duration = Field(default=900.0, alias="startupTimeout")

    @field_validator("gpus")
    @classmethod
    def _gpus_bounds(cls, v: Gpus) -> Gpus:
        if isinstance(v, int) and not isinstance(v, bool) and v > 1024:
            raise ValueError("gpus is at most 1024")
        if isinstance(v, list) and (len(v) > 1024 or any(i > 4095 for i in v)):
            raise ValueError("at most 1024 gpu ids, each below 4096")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: Gpus) -> Gpus:
        if isinstance(v, bool):
            raise ValueError("gpus must be 'auto', a count or a list of ids")
        if isinstance(v, int) and v < 0:
            raise ValueError("gpus cannot be negative")
        if isinstance(v, list) and (len(set(v)) != len(v) or any(i < 0 for i in v)):
            raise ValueError("gpu ids must be distinct and >= 0")
        return v


class LocalBackend(_BackendBase):
    kind: Literal["local"]


_SIZE = re.compile(r"^[1-9][0-9]*[bkmg]?$", re.I)
_VOLUME = re.compile(r"^(/[^:]*):(/[^:]*)(:(ro|rw))?$")


def _size(value: str | None, what: str) -> str | None:
    if value is not None and not _SIZE.match(value):
        raise ValueError(f"{what} {value!r} must be a size like 16g, 512m or 1073741824 (b, k, m, g)")
    return value


class DockerBackend(_BackendBase):
    """The engine in a container of the engine's image (see docs/backends.md, Docker)."""

    kind: Literal["docker"]
    shm_size: str = Field(
        default="16g", alias="shmSize", description="/dev/shm size; not used with ipc: host."
    )
    ipc: Literal["private", "shareable", "host"] = Field(
        default="private",
        description="IPC namespace; host shares the host's /dev/shm (vLLM's own docs suggest it for "
        "tensor parallel) instead of a private one of shmSize.",
    )
    network: Literal["host", "bridge"] = Field(
        default="bridge",
        description="bridge: the engine's port published on 127.0.0.1 only; host: the host's network.",
    )
    memory: str | None = Field(
        default=None,
        description="Memory limit of the container (host RAM, not GPU memory), e.g. 64g; over it the "
        "engine is killed and the experiment fails as oom.",
    )
    volumes: list[str] = Field(
        default_factory=list,
        description="Extra host:container[:ro|:rw] bind mounts; each host path must lie under a root "
        "the operator policy allows (volumeRoots), else the study stalls.",
    )

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str) -> str:
        _size(v, "shmSize")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        return _size(v, "memory")

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[str]) -> list[str]:
        for item in v:
            m = _VOLUME.match(item)
            if not m or ".." in item.split("/"):
                raise ValueError(
                    f"volume {item!r} must be HOST:CONTAINER or HOST:CONTAINER:ro with absolute paths "
                    "and no '..'"
                )
        return v


class Toleration(StrictModel):
    """A pod toleration, as Kubernetes spells it."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: StrictInt | None = Field(default=None, alias="tolerationSeconds")


class KubeResources(StrictModel):
    """CPU and memory (and any other non-GPU resource) of the engine container; the GPU
    request comes from the parallel settings and ``gpuResource``."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class KubernetesBackend(_BackendBase):
    kind: Literal["kubernetes"]
    namespace: str = "default"
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = Field(default=None, description="A pod affinity block, as is.")
    runtime_class_name: str | None = Field(default=None, alias="runtimeClassName")
    image_pull_secrets: list[str] = Field(default_factory=list, alias="imagePullSecrets")
    gpu_resource: str = Field(default="nvidia.com/gpu", alias="gpuResource")
    service_account: str | None = Field(default=None, alias="serviceAccount")
    model_cache_pvc: str | None = Field(default=None, alias="modelCachePvc")
    model_cache_host_path: str | None = Field(
        default=None,
        alias="modelCacheHostPath",
        description="A node directory as the model cache; the daemon must allow it (see docs/backends.md).",
    )
    model_cache_path: str = Field(default="/root/.cache/huggingface", alias="modelCachePath")
    resources: KubeResources = Field(default_factory=KubeResources)
    shm_size: str = Field(default="16Gi", alias="shmSize")
    access: Literal["auto", "service", "portForward", "podIP"] = Field(
        default="auto",
        description="How the daemon reaches the engine: the Service's DNS name (in the cluster), the API "
        "server's port-forward (outside), or the pod IP; auto picks by where the daemon runs.",
    )
    scheduling_timeout: Duration = Field(default=300.0, alias="schedulingTimeout")

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return dns_label(v, "namespace")

    @field_validator("service_account", "model_cache_pvc", "runtime_class_name")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else dns_label(v, "name")

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, v: list[str]) -> list[str]:
        return [dns_label(s, "image pull secret") for s in v]

    @field_validator("model_cache_host_path", "model_cache_path")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"{v!r} must be an absolute path without '..'")
        return v

    @field_validator("gpu_resource")
    @classmethod
    def _resource(cls, v: str) -> str:
        if not re.match(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", v):
            raise ValueError(f"{v!r} is not a Kubernetes resource name, e.g. nvidia.com/gpu")
        return v

    @model_validator(mode="after")
    def _one_cache(self) -> KubernetesBackend:
        if self.model_cache_pvc and self.model_cache_host_path:
            raise ValueError("give modelCachePvc or modelCacheHostPath, not both")
        return self


Backend = Annotated[LocalBackend | DockerBackend | KubernetesBackend, Field(discriminator="kind")]
