"""The docker backend: each engine in a container of its image, through the Docker Engine API.

Built on the ``docker`` SDK (the ``docker`` extra, imported when a backend is made). It talks to
whatever ``DOCKER_HOST`` names, so Podman's Docker-compatible socket works the same; the tests
run against Podman. One module per concern:

* :mod:`.backend` — the backend object: settings, the client, which host folders may be
  mounted, the container's configuration (:mod:`backends.deploy.container` decides what goes
  in, and also writes ``best/docker-run.sh``, so the artifact is the invocation that was
  measured);
* :mod:`.ownership` — labels, the owner mark, orphan cleanup;
* :mod:`.start` — getting the container running in a thread of its own (pull, create, start,
  the port retry, the log stream), every problem an :class:`~specs.errors.EngineFailure` that
  ``wait_ready`` raises;
* :mod:`.deployment` — readiness, how the container ended (exit 137 under a memory limit is
  ``oom``), failures and teardown.

What every backend does alike (validation, environment, teardown once, the redacted tail, the
readiness clock) is :mod:`backends.deploy.shared`.

**Bridge by default, published on 127.0.0.1.** The engine listens on every address of its own
network namespace (:attr:`DockerBackend.bind_host`), reachable from the host only through the
loopback port.
"""

from backends.deploy.docker.backend import DockerBackend, check_volumes, local_paths
from backends.deploy.docker.deployment import DockerDeployment
from backends.deploy.docker.ownership import LABEL_DEPLOYMENT, container_name

__all__ = [
    "LABEL_DEPLOYMENT",
    "DockerBackend",
    "DockerDeployment",
    "check_volumes",
    "container_name",
    "local_paths",
]
