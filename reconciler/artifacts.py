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
import json
import shlex

import yaml

from backends.deploy.kube_manifests import deployment_objects
from backends.engines import get_engine
from backends.engines.base import LaunchPlan
from specs.model import EnvFrom, KubernetesBackend, TuningSpec
from specs.records import ExperimentRecord

PORT = 8000

#: default images when the spec gives none (docker hub / NGC names of the official images)
DEFAULT_IMAGES = {
    "vllm": "vllm/vllm-openai:{tag}",
    "sglang": "lmsysorg/sglang:{tag}",
    "trtllm": "nvcr.io/nvidia/tensorrt-llm/release:{tag}",
}


def image_for(spec: TuningSpec, plan: LaunchPlan) -> str | None:
    engine = spec.spec.engine
    if engine.image:
        return engine.image
    if plan.image:
        return plan.image
    template = DEFAULT_IMAGES.get(engine.name)
    if template is None:
        return None
    tag = f"v{engine.version}" if engine.version and engine.name != "trtllm" else (engine.version or "latest")
    return template.format(tag=tag)


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
        docker = ["docker", "run", "--rm", "-p", f"{PORT}:{PORT}", "--ipc=host"]
        if gpus:
            docker += ["--gpus", f'"device={",".join(str(i) for i in range(gpus))}"']
        for k, v in env:
            docker += ["-e", k if v is None else f"{k}={v}"]
        docker += [image, *plan.container_args]
        files["docker-run.sh"] = "#!/bin/sh\n" + shlex.join(docker) + "\n"
        files["deployment.yaml"] = _deployment(spec, image, plan, gpus)
    else:
        files["docker-run.sh"] = (
            f"# {spec.spec.engine.name} has no container image; run command.sh instead.\n"
        )

    files["engine-args.json"] = (
        json.dumps(
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
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    if pareto is not None and len(spec.spec.objectives) > 1:
        files["pareto.json"] = (
            json.dumps(
                [
                    {
                        "experiment": r.id,
                        "config": r.config,
                        "objectives": [o.model_dump() for o in r.objectives],
                        "command": shlex.join(engine.launch(spec, r.config, host="0.0.0.0", port=PORT).argv),
                    }
                    for r in pareto
                ],
                indent=2,
                sort_keys=True,
            )
            + "\n"
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
