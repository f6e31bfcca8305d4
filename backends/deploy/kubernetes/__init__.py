"""The kubernetes backend: every experiment a Pod (plus a Service), scheduled by the cluster.

``pip install 'autotuner[kubernetes]'``; the official ``kubernetes`` client is imported only when
a spec selects this backend. The manifests come from :mod:`backends.deploy.kube_manifests`, the
same builder that writes ``best/deployment.yaml``. One module per concern:

* :mod:`.api` — credentials, the calls with retry and backoff (409, 429 with ``Retry-After``,
  5xx, connection errors), errors in our terms (401/403 → :class:`specs.errors.KubernetesAccessError`,
  naming the verb and resource the account lacks);
* :mod:`.ownership` — labels and the owner ConfigMap the live daemon holds (heartbeat,
  ``resourceVersion``-guarded take-over), so that a live daemon's pods are never touched;
* :mod:`.orphans` — finding and deleting what dead incarnations of the spec left;
* :mod:`.objects` — one experiment's Secret, ConfigMap, Pod and Service: created, leftovers of
  ours replaced, deleted at teardown;
* :mod:`.pods` — what a pod's status and events mean: the failure kind (``image_unavailable``,
  ``executable_missing``, ``unschedulable``, ``oom``, ``startup_crash``, ...) and its words;
* :mod:`.access` — reaching the engine: Service DNS, port-forward, or pod IP;
* :mod:`.deployment` — readiness (the start-up clock runs from scheduling), exit, failures,
  the followed log, teardown;
* :mod:`.backend` — the backend object: settings, identity, the checks of ``deploy``.

What every backend does alike (validation, environment, teardown once, the redacted tail, the
readiness clock) is :mod:`backends.deploy.shared`.
"""

from backends.deploy.kubernetes.api import RetryPolicy
from backends.deploy.kubernetes.backend import KubernetesBackend
from backends.deploy.kubernetes.deployment import KubernetesDeployment
from backends.deploy.kubernetes.ownership import L_DEPLOYMENT, L_SPEC, MANAGED_BY

__all__ = [
    "L_DEPLOYMENT",
    "L_SPEC",
    "MANAGED_BY",
    "KubernetesBackend",
    "KubernetesDeployment",
    "RetryPolicy",
]
