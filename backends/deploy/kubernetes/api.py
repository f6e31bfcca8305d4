"""The Kubernetes API as the backend uses it: credentials, a few calls, retries, errors in our terms.

Calls go through :meth:`Api.call`, which returns the parsed JSON (dicts in and out: the
backend never uses the client's model classes, so what it sends is exactly what
:mod:`backends.deploy.kube_manifests` built) and retries with exponential backoff what may
pass: 409 Conflict (where asked), 429 (honouring ``Retry-After``), 5xx and connection errors.
401/403 are not retried: they become :class:`KubernetesAccessError`, naming the verb and
resource the daemon's account lacks (``create pods in namespace x``), a user error since only
the operator's Role can fix it. 404 and an unasked-for 409 are :class:`NotFound` and
:class:`Exists`, which callers handle as answers, not failures.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from specs.errors import KubernetesAccessError, KubernetesApiError, MissingExtraError, UserError

__all__ = [
    "Api",
    "Exists",
    "NotFound",
    "RetryPolicy",
    "load_client",
    "running_in_cluster",
]

log = logging.getLogger(__name__)


class NotFound(Exception):
    """404: an answer (the object is not there), not a failure."""


class Exists(Exception):
    """409 where no retry was asked for: the object exists, or changed under a precondition."""


class RetryPolicy:
    """Exponential backoff for the API's transient answers."""

    def __init__(self, attempts: int = 6, base_s: float = 0.2, cap_s: float = 5.0) -> None:
        self.attempts = attempts
        self.base_s = base_s
        self.cap_s = cap_s

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.cap_s)
            except ValueError:
                pass
        return min(self.base_s * 2**attempt, self.cap_s)


def running_in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


def load_client(kubeconfig: str | None, context: str | None, in_cluster: bool | None) -> Any:
    """An ``ApiClient`` from in-cluster credentials or the kubeconfig (``KUBECONFIG``, context).

    urllib3's own retries are turned off: :class:`Api` retries with backoff where that is
    right, and urllib3 would also repeat a watch whose read timed out on purpose (four times
    the wait before a cancel or a deadline is noticed).
    """
    try:
        from kubernetes import client, config
    except ImportError:
        raise MissingExtraError("kubernetes", "kubernetes") from None
    if in_cluster is None:
        in_cluster = kubeconfig is None and running_in_cluster()
    configuration = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except config.ConfigException as exc:
        raise UserError(
            f"no usable Kubernetes configuration: {exc}",
            hint="set KUBECONFIG (and AUTOTUNER_KUBE_CONTEXT for a context other than the current one), "
            "or run the daemon in the cluster with a service account (deploy/kubernetes/)",
        ) from None
    configuration.retries = False
    return client.ApiClient(configuration)


class Api:
    """The few calls the backend makes, with retries and errors in our terms; dicts in and out."""

    def __init__(self, api_client: Any, retry: RetryPolicy) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.retry = retry
        self._exc: type[Exception] = client.ApiException

    def call(
        self,
        verb: str,
        resource: str,
        namespace: str,
        fn: Callable[..., Any],
        *args: Any,
        conflict_retry: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn`` and parse its JSON answer; ``None`` for a body-less answer."""
        kwargs.setdefault("_preload_content", False)
        where = (verb, resource, namespace)
        last = ""
        for attempt in range(self.retry.attempts):
            try:
                resp = fn(*args, **kwargs)
                data = resp.data
                return json.loads(data) if data else None
            except self._exc as exc:
                status = getattr(exc, "status", 0) or 0
                message = _status_message(exc)
                _raise_final(status, message, where, conflict_retry=conflict_retry)
                delay = self.retry.delay(attempt, _retry_after(exc))
                last = f"HTTP {status}: {message}"
            except (OSError, _urllib3_errors()) as exc:
                delay = self.retry.delay(attempt, None)
                last = f"{type(exc).__name__}: {exc}"
            log.info("kubernetes %s %s: %s; retrying in %.2fs", verb, resource, last, delay)
            time.sleep(delay)
        raise KubernetesApiError(
            f"{verb} {resource} in namespace {namespace} still failed after "
            f"{self.retry.attempts} tries ({last})"
        )


def _raise_final(status: int, message: str, where: tuple[str, str, str], *, conflict_retry: bool) -> None:
    """Raise for an answer that no retry can change; return for one worth another try."""
    verb, resource, namespace = where
    if status == 404:
        raise NotFound(message) from None
    if status in (401, 403):
        raise KubernetesAccessError(
            f"the daemon's Kubernetes account may not {verb} {resource} in namespace {namespace} "
            f"(HTTP {status}): {message}",
            hint=f"grant '{verb}' on '{resource}' to the daemon's service account "
            "(deploy/kubernetes/rbac.yaml has the minimal Role), or fix the credentials",
        ) from None
    if status == 409 and not conflict_retry:
        raise Exists(message) from None
    if status not in (409, 429) and not 500 <= status <= 599:
        raise KubernetesApiError(
            f"{verb} {resource} in namespace {namespace} failed (HTTP {status}): {message}",
            status=status,
            hint="the API server refused the request (an admission policy or quota of the "
            "cluster, or a bug of autotuner); the message says which",
        ) from None


def _retry_after(exc: Any) -> str | None:
    headers = getattr(exc, "headers", None) or {}
    return headers.get("Retry-After") if hasattr(headers, "get") else None


def _urllib3_errors() -> type[Exception]:
    import urllib3

    return urllib3.exceptions.HTTPError


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            text = body.decode() if isinstance(body, bytes) else str(body)
            return str(json.loads(text).get("message") or text)[:500]
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(getattr(exc, "reason", exc))
