"""One engine container as data: what the docker backend creates and what ``best/docker-run.sh`` runs.

The problem: the same container is described twice, once as keyword arguments of the docker SDK
(the backend) and once as a ``docker run`` command line (the artifact a user copies). Two
hand-written descriptions drift apart: the original system's artifact doubled ``vllm serve``,
and an artifact without ``--ipc``/``--shm-size`` or the cache mount is not the invocation that
was measured. So :func:`container_config` builds one :class:`ContainerConfig` from the engine's
:class:`~backends.engines.base.LaunchPlan` and the spec's docker settings, and the two renderings
(:meth:`ContainerConfig.sdk_kwargs`, :meth:`ContainerConfig.argv`) are mechanical. Only what
*must* differ is an input: the leased GPU ids (the artifact numbers them from 0), the host paths
of the caches, and the labels (an artifact carries none, so orphan cleanup never matches it).

What a container gets, and nothing else:

* the image's own entrypoint, followed by ``plan.container_args`` (the engine mapping knows
  which images already run their server: ``vllm/vllm-openai`` runs ``vllm serve``; SGLang's
  image needs ``python3 -m sglang.launch_server``; TensorRT-LLM's ``trtllm-serve``);
* GPUs as one ``DeviceRequest`` of exactly the leased ids, and ``NVIDIA_VISIBLE_DEVICES`` with
  the same ids for runtimes that read the variable instead (Podman's NVIDIA hook); ``void`` for
  an engine without GPUs, so an image that says ``NVIDIA_VISIBLE_DEVICES=all`` sees none;
* the environment of the plan only (literal values, and ``fromEnv`` references resolved at
  start): never the daemon's environment, never in labels;
* the engine's port published on ``127.0.0.1`` (bridge network), or the host's network;
* ``/dev/shm`` of ``shmSize``, or the host's IPC namespace;
* the mounts it is given (Hugging Face cache, local model paths read-only, the plan's files).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backends.deploy.environment import BASE
from backends.engines.base import LaunchPlan
from specs.model import DockerBackend as DockerSettings

__all__ = [
    "CONTAINER_HF_HOME",
    "CONTAINER_WORKDIR",
    "ContainerConfig",
    "Mount",
    "container_config",
    "parse_volume",
    "shell_join",
]

#: where the Hugging Face cache is mounted, and ``HF_HOME`` points, in every engine container
CONTAINER_HF_HOME = "/root/.cache/huggingface"
#: where the plan's files (TensorRT-LLM's LLM API options...) are mounted, read-only
CONTAINER_WORKDIR = "/autotuner/work"


@dataclass(frozen=True)
class Mount:
    """A bind mount; ``source`` is a host path (or a shell reference in an artifact)."""

    source: str
    target: str
    read_only: bool = True

    def spec(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


def parse_volume(text: str) -> Mount:
    """``HOST:CONTAINER[:ro|:rw]`` (the spec's ``backend.volumes``, already format-checked)."""
    parts = text.split(":")
    if (
        len(parts) not in (2, 3)
        or not all(p.startswith("/") for p in parts[:2])
        or parts[2:]
        not in (
            [],
            ["ro"],
            ["rw"],
        )
    ):
        raise ValueError(f"{text!r} is not HOST:CONTAINER[:ro|:rw] with absolute paths")
    read_only = len(parts) == 3 and parts[2] == "ro"
    return Mount(source=parts[0], target=parts[1], read_only=read_only)


@dataclass(frozen=True)
class ContainerConfig:
    image: str
    #: what follows the image: the entrypoint's arguments
    command: tuple[str, ...]
    #: literal environment values, in order
    env: tuple[tuple[str, str], ...]
    #: variables whose values are secrets, set at start (``docker run -e NAME`` passes them on)
    secret_env: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    gpu_ids: tuple[str, ...] = ()
    network: str = "bridge"
    #: container port → host port (bridge network only)
    port: int | None = None
    host_port: int | None = None
    #: host address the port is published on; ``None``: every address (an artifact)
    publish_ip: str | None = "127.0.0.1"
    ipc: str = "private"
    shm_size: str | None = None
    memory: str | None = None
    mounts: tuple[Mount, ...] = ()
    working_dir: str | None = None

    def sdk_kwargs(self, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments of ``docker.DockerClient().containers.create``.

        ``secrets`` are the resolved values of :attr:`secret_env`; they go into the container's
        environment only (the API has no other way), never into labels or files.
        """
        import docker.types  # the docker extra; only the backend calls this

        env = dict(self.env)
        for key in self.secret_env:
            if secrets is None or key not in secrets:
                raise KeyError(f"secret {key} was not resolved")
            env[key] = secrets[key]
        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command),
            "environment": env,
            "labels": dict(self.labels),
            "detach": True,
            "ipc_mode": self.ipc,
            "mounts": [
                docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in self.mounts
            ],
        }
        if self.name is not None:
            kwargs["name"] = self.name
        if self.gpu_ids:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(
                    driver="nvidia", device_ids=list(self.gpu_ids), capabilities=[["gpu"]]
                )
            ]
        if self.network == "host":
            kwargs["network_mode"] = "host"
        elif self.port is not None:
            host_port = self.host_port or self.port
            kwargs["ports"] = {
                f"{self.port}/tcp": (self.publish_ip, host_port) if self.publish_ip else host_port
            }
        if self.shm_size is not None and self.ipc != "host":
            kwargs["shm_size"] = self.shm_size
        if self.memory is not None:
            kwargs["mem_limit"] = self.memory
        if self.working_dir is not None:
            kwargs["working_dir"] = self.working_dir
        return kwargs

    def argv(self, *, remove: bool = True) -> list[str]:
        """The same container as a ``docker run`` argument list (secrets by name: ``-e NAME``)."""
        out = ["docker", "run"]
        if remove:
            out.append("--rm")
        if self.name is not None:
            out += ["--name", self.name]
        if self.network == "host":
            out.append("--network=host")
        elif self.port is not None:
            host_port = self.host_port or self.port
            where = f"{self.publish_ip}:" if self.publish_ip else ""
            out += ["-p", f"{where}{host_port}:{self.port}"]
        out.append(f"--ipc={self.ipc}")
        if self.shm_size is not None and self.ipc != "host":
            out.append(f"--shm-size={self.shm_size}")
        if self.memory is not None:
            out.append(f"--memory={self.memory}")
        if self.gpu_ids:
            # the quotes are docker's own syntax for a list of devices
            out += ["--gpus", f'"device={",".join(self.gpu_ids)}"']
        for key, value in self.env:
            out += ["-e", f"{key}={value}"]
        for key in self.secret_env:
            out += ["-e", key]
        for m in self.mounts:
            out += ["-v", m.spec()]
        if self.working_dir is not None:
            out += ["-w", self.working_dir]
        for key, value in self.labels:
            out += ["--label", f"{key}={value}"]
        return [*out, self.image, *self.command]


def container_config(
    plan: LaunchPlan,
    *,
    image: str,
    settings: DockerSettings,
    gpu_ids: Sequence[int | str],
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
    host_port: int | None = None,
    publish_ip: str | None = "127.0.0.1",
    hf_cache: str | None = None,
    model_paths: Sequence[str] = (),
    mounts: Sequence[Mount] = (),
    files_dir: str | None = None,
) -> ContainerConfig:
    """The container of one engine instance; see the module docstring for what it holds.

    ``hf_cache``: host folder of the Hugging Face cache (mounted read-write, ``HF_HOME`` set);
    ``model_paths``: host paths of local models, mounted read-only at the same path so that the
    argv needs no rewriting; ``mounts``: further mounts, already checked by the caller (the
    spec's volumes against the operator's roots); ``files_dir``: host folder holding the plan's
    files, mounted read-only as the working directory.
    """
    # the fixed base of every engine environment first (docs/security.md), so that the artifact
    # shows what the backend passes
    env: list[tuple[str, str]] = [*BASE.items(), *plan.env.items()]
    all_mounts: list[Mount] = []
    if hf_cache is not None:
        env.append(("HF_HOME", CONTAINER_HF_HOME))
        all_mounts.append(Mount(hf_cache, CONTAINER_HF_HOME, read_only=False))
    for path in dict.fromkeys(model_paths):
        all_mounts.append(Mount(path, path, read_only=True))
    all_mounts += [*mounts, *(parse_volume(v) for v in settings.volumes)]
    if files_dir is not None:
        all_mounts.append(Mount(files_dir, CONTAINER_WORKDIR, read_only=True))
    # one mount per target (the engines refuse duplicates): an explicit one replaces the default
    all_mounts = list({m.target: m for m in all_mounts}.values())
    ids = tuple(str(i) for i in gpu_ids)
    # the same ids for runtimes that read the variable; "void" hides every GPU from a CPU engine
    env.append(("NVIDIA_VISIBLE_DEVICES", ",".join(ids) if ids else "void"))
    env.append(("PYTHONUNBUFFERED", plan.env.get("PYTHONUNBUFFERED", "1")))
    return ContainerConfig(
        image=image,
        command=tuple(plan.container_args),
        env=tuple(dict(env).items()),
        secret_env=tuple(plan.env_from),
        labels=tuple((labels or {}).items()),
        name=name,
        gpu_ids=ids,
        network=settings.network,
        port=plan.port,
        host_port=host_port,
        publish_ip=publish_ip,
        ipc=settings.ipc,
        shm_size=settings.shm_size,
        memory=settings.memory,
        mounts=tuple(all_mounts),
        working_dir=CONTAINER_WORKDIR if files_dir is not None else None,
    )


def shell_join(argv: Sequence[str], variables: Mapping[str, str] | None = None) -> str:
    """``shlex.join`` of ``argv``, except that each placeholder in ``variables`` is written as the
    given shell text (``"$HF_CACHE"``), so a script can take a host path from its caller."""
    text = shlex.join(argv)
    for placeholder, shell in (variables or {}).items():
        text = text.replace(placeholder, shell)
    return text
