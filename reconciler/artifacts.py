"""``best/``: the winning configuration as ready-to-use artifacts.

* ``command.sh`` — the engine command line (an argument list, quoted for a shell only here);
* ``docker-run.sh`` — ``docker run`` of the engine's image with the *container* arguments (the
  image's entrypoint already is the server; the original system doubled ``vllm serve``);
* ``deployment.yaml`` — a Kubernetes Deployment + Service built by the kubernetes backend's own
  manifest builder (``backends.deploy.kube_manifests``): the pod the experiments ran in, with
  start-up and readiness probes; secrets referenced from the Secret ``<spec>-env``, never inlined;
* ``engine-args.json`` — the engine flags as data, plus the metrics that made it win;
* ``pareto.json`` — every Pareto-optimal configuration when the spec has several objectives.
"""

from __future__ import annotations

import dataclasses
import shlex

import yaml

from backends.deploy.container import container_config, shell_join
from backends.deploy.kube_manifests import deployment_objects
from backends.engines import get_engine
from backends.engines.base import LaunchPlan
from core.atomic import json_text
from specs.model import DockerBackend as DockerSettings
from specs.model import EnvFrom, KubernetesBackend, TuningSpec
from specs.records import ExperimentRecord

PORT = 8000
#: in docker-run.sh, the host's Hugging Face cache comes from the caller (``HF_CACHE``)
_HF_CACHE = "__AUTOTUNER_HF_CACHE__"


def image_for(spec: TuningSpec, plan: LaunchPlan) -> str | None:
    """The image the docker and kubernetes backends run: ``engine.image``, else the engine's
    official image of ``engine.version`` (the engine mapping decides, see ``TableEngine.image``)."""
    return spec.spec.engine.image or plan.image


def docker_settings(spec: TuningSpec) -> DockerSettings:
    """The spec's docker settings; the defaults when the spec runs on another backend."""
    backend = spec.spec.backend
    return backend if isinstance(backend, DockerSettings) else DockerSettings(kind="docker")


def docker_command(spec: TuningSpec, plan: LaunchPlan, gpus: int, image: str) -> str:
    """``docker run`` of the engine as a shell line, built by the docker backend's own builder
    (:func:`backends.deploy.container.container_config`): the same image, arguments, GPUs, IPC,
    shared memory, memory limit, mounts and environment as the measured experiment; GPUs numbered
    from 0, the port published on every address, secrets passed on by name (``-e HF_TOKEN``), the
    Hugging Face cache from ``$HF_CACHE``. ``autotuner plan`` shows the same line."""
    settings = docker_settings(spec)
    model = spec.spec.model.id
    config = container_config(
        plan,
        image=image,
        settings=settings,
        gpu_ids=[] if plan.simulated else list(range(gpus)),
        publish_ip=None,
        hf_cache=_HF_CACHE,
        model_paths=[model] if model.startswith("/") else [],
    )
    return shell_join(config.argv(), {_HF_CACHE: '"$HF_CACHE"'})


def docker_run(spec: TuningSpec, plan: LaunchPlan, gpus: int, image: str) -> str:
    """``best/docker-run.sh``: :func:`docker_command` with ``HF_CACHE`` defaulted."""
    return (
        "#!/bin/sh\n"
        f"# Best configuration of {spec.name}, as the docker backend ran it. The Hugging Face cache\n"
        "# is $HF_CACHE (default ~/.cache/huggingface); secrets come from your environment.\n"
        'HF_CACHE="${HF_CACHE:-$HOME/.cache/huggingface}"\n' + docker_command(spec, plan, gpus, image) + "\n"
    )


def env_lines(spec: TuningSpec) -> list[tuple[str, str | None]]:
    """(name, literal value or None for a secret reference)."""
    return [(k, None if isinstance(v, EnvFrom) else v) for k, v in spec.spec.engine.env.items()]


def render(
    spec: TuningSpec, record: ExperimentRecord, pareto: list[ExperimentRecord] | None = None
) -> dict[str, str]:
    engine = get_engine(spec.spec.engine.name, spec.spec.engine.variant)
    plan = engine.launch(spec, record.config, host="0.0.0.0", port=PORT)
    gpus = engine.gpus_for(spec, record.config)
    image = image_for(spec, plan)
    files: dict[str, str] = {}
    env = env_lines(spec)

    exports = "".join(
        f"# export {k}=...   (secret: set it in your environment)\n"
        if v is None
        else f"export {k}={shlex.quote(v)}\n"
        for k, v in env
    )
    files["command.sh"] = (
        "#!/bin/sh\n"
        f"# Best configuration of {spec.name} (experiment {record.id}, generation {record.generation}).\n"
        + exports
        + shlex.join(plan.argv)
        + "\n"
    )

    if image:
        files["docker-run.sh"] = docker_run(spec, plan, gpus, image)
        files["deployment.yaml"] = _deployment(spec, image, plan, gpus)
    else:
        files["docker-run.sh"] = (
            f"# {spec.spec.engine.name} has no container image; run command.sh instead.\n"
        )

    files["engine-args.json"] = json_text(
        {
            "spec": spec.name,
            "experiment": record.id,
            "generation": record.generation,
            "engine": record.engine,
            "model": record.model,
            "config": record.config,
            "engineFlags": record.engine_flags,
            "argv": plan.argv,
            "containerArgs": plan.container_args,
            "image": image,
            "gpus": gpus,
            "summary": record.summary,
            "objectives": [o.model_dump() for o in record.objectives],
        }
    )
    if pareto is not None and len(spec.spec.objectives) > 1:
        files["pareto.json"] = json_text(
            [
                {
                    "experiment": r.id,
                    "config": r.config,
                    "objectives": [o.model_dump() for o in r.objectives],
                    "command": shlex.join(engine.launch(spec, r.config, host="0.0.0.0", port=PORT).argv),
                }
                for r in pareto
            ]
        )
    return files


def _deployment(spec: TuningSpec, image: str, plan: LaunchPlan, gpus: int) -> str:
    """The same pod the experiments ran in (``backends.deploy.kube_manifests``), as a Deployment."""
    backend = spec.spec.backend
    opts = backend if isinstance(backend, KubernetesBackend) else KubernetesBackend(kind="kubernetes")
    plan = dataclasses.replace(plan, gpus=gpus)
    objects = deployment_objects(opts, plan, name=spec.name, image=image)
    header = ""
    if plan.env_from:
        header = (
            f"# The engine reads {', '.join(sorted(plan.env_from))} from the Secret {spec.name}-env:\n"
            f"#   kubectl create secret generic {spec.name}-env "
            + " ".join(f"--from-literal={k}=..." for k in sorted(plan.env_from))
            + "\n"
        )
    return header + yaml.safe_dump_all(objects, sort_keys=False)
