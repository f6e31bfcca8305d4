"""A FAKE Kubernetes API server, over real HTTP, for the kubernetes backend's tests.

No real API server can run on the test machines, so the backend's tests talk, through the real
``kubernetes`` client, to this stand-in. It is a fake and says so: it keeps objects in a dict,
has no admission, no validation beyond what the backend relies on, and no authorization model
but a bearer token, an explicit list of forbidden (verb, resource) pairs, and optionally a
Role's rules (:meth:`FakeKubeApiServer.allow_only`). What it does
implement follows the real API's wire behaviour closely enough for the client to be fooled:

* core/v1 ``pods``, ``services``, ``configmaps``, ``secrets``, ``events``: create (``409
  AlreadyExists``), get, list with ``labelSelector`` (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in
  (a,b)``) and ``fieldSelector`` (``a.b=v``), delete (pods gracefully: ``deletionTimestamp``, and
  gone once the fake kubelet has stopped them), merge patch with a ``resourceVersion``
  precondition (``409 Conflict``), ``pods/log`` (also ``follow=true``, streamed while the
  container runs);
* ``watch=true`` from a ``resourceVersion``, newline-delimited JSON events, ending at
  ``timeoutSeconds``; ``410 Gone`` for a version older than the kept history;
* garbage collection: deleting an object deletes the objects whose ``ownerReferences`` name its
  uid (background propagation);
* ``pods/portforward`` over WebSocket (``v4.channel.k8s.io``, the protocol of the client's
  ``kubernetes.stream.portforward``), forwarding to the pod's port on this host;
* Status objects for errors, as the client expects (``kind: Status``, ``reason``, ``code``);
* fault injection: :meth:`FakeKubeApiServer.fail` answers the next N matching requests with a
  429, 500, 403... (``Retry-After`` on 429), :meth:`FakeKubeApiServer.forbid` makes a verb on a
  resource always 403 with the real message shape. Every request is recorded in
  :attr:`FakeKubeApiServer.requests`.

The simulated kubelet (:mod:`tests.fakes.kubelet`) runs in the same process and changes pod
status through :meth:`FakeKubeApiServer.update`, as a kubelet does through the status
subresource.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

KINDS = {
    "pods": "Pod",
    "services": "Service",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "events": "Event",
}
_PATH = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$"
)
#: how many watch events are kept; a watch from an older version gets 410 Gone
HISTORY = 10_000

Obj = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    count: int
    message: str


@dataclass
class Request:
    method: str
    path: str
    status: int


@dataclass
class _Event:
    rv: int
    type: str
    plural: str
    namespace: str
    obj: Obj


@dataclass
class LogSource:
    """Where a container's log is and whether it may still grow (set by the kubelet)."""

    path: Path
    running: Callable[[], bool] = field(default=lambda: False)


def match_labels(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector syntax (the subset the backend and kubectl use)."""
    for term in _split_selector(selector):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$", term)
        if m:
            values = {v.strip() for v in m.group(3).split(",")}
            has = labels.get(m.group(1)) in values
            if has != (m.group(2) == "in"):
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _split_selector(selector: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def match_fields(selector: str, obj: Obj) -> bool:
    for term in selector.split(","):
        if not term.strip():
            continue
        negate = "!=" in term
        key, value = term.split("!=" if negate else "=", 1)
        cur: Any = obj
        for part in key.strip().split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) == value.strip()) == negate:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patch is treated the same: a fake)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKubeApiServer:
    """A fake API server on 127.0.0.1 (see the module docstring). Use as a context manager."""

    def __init__(self, *, token: str = "fake-token", user: str = "system:serviceaccount:autotuner:autotuner"):
        self.token = token
        self.user = user
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.history: list[_Event] = []
        self.rv = 100
        self.faults: list[Fault] = []
        self.forbidden: set[tuple[str, str]] = set()
        #: when set, only these (verb, resource) pairs are allowed (a Role's rules)
        self.allowed: set[tuple[str, str]] | None = None
        self.requests: list[Request] = []
        #: every object a client asked to create, exactly as it was sent
        self.received: list[Obj] = []
        #: (namespace, pod, container) → where the kubelet writes its log
        self.logs: dict[tuple[str, str, str], LogSource] = {}
        #: called with (namespace, name) when a pod gets a deletionTimestamp (the kubelet stops it)
        self.on_pod_delete: Callable[[str, str], None] | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FakeKubeApiServer:
        server = self

        class Handler(_Handler):
            api = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self.changed:
            self.changed.notify_all()

    def __enter__(self) -> FakeKubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: Path, *, context: str = "fake") -> Path:
        """Write a kubeconfig pointing at this server (token auth), with a second unused context."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "elsewhere",
            "clusters": [
                {"name": "fake", "cluster": {"server": self.url}},
                {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}},
            ],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {"name": context, "context": {"cluster": "fake", "user": "fake"}},
                {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "fake"}},
            ],
        }
        path.write_text(json.dumps(config))
        return path

    # ---------------------------------------------------------------------------- fault knobs

    def fail(self, method: str, path_regex: str, status: int, *, count: int = 1, message: str = "") -> None:
        """Answer the next ``count`` requests matching ``method`` and ``path_regex`` with ``status``."""
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path_regex), status, count, message))

    def forbid(self, verb: str, plural: str) -> None:
        """``verb`` (create, get, list, watch, delete, patch) on ``plural`` is always 403."""
        with self.lock:
            self.forbidden.add((verb, plural))

    def allow_only(self, rules: list[dict[str, Any]]) -> None:
        """Authorize like a Role with these ``rules`` (core API group only): all else is 403."""
        allowed = set()
        for rule in rules:
            if "" not in rule.get("apiGroups", []):
                continue
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    allowed.add((verb, resource))
        with self.lock:
            self.allowed = allowed

    def count(self, method: str, path_regex: str, status: int | None = None) -> int:
        rx = re.compile(path_regex)
        with self.lock:
            return sum(
                1
                for r in self.requests
                if r.method == method.upper() and rx.search(r.path) and (status is None or r.status == status)
            )

    # ------------------------------------------------------------------------------- storage

    def list(self, plural: str, namespace: str | None = None, selector: str = "") -> list[Obj]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (p, ns, _), o in self.objects.items()
                if p == plural
                and (namespace is None or ns == namespace)
                and match_labels(selector, o["metadata"].get("labels") or {})
            ]

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            o = self.objects.get((plural, namespace, name))
            return copy.deepcopy(o) if o is not None else None

    def create(self, plural: str, namespace: str, obj: Obj) -> Obj:
        """Store a new object (``KeyError`` when one of that name exists)."""
        with self.changed:
            meta = obj.setdefault("metadata", {})
            meta["namespace"] = namespace
            key = (plural, namespace, meta["name"])
            if key in self.objects:
                raise KeyError(meta["name"])
            obj.setdefault("apiVersion", "v1")
            obj["kind"] = KINDS[plural]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            if plural == "secrets":
                obj["data"] = {**obj.get("data", {}), **obj.pop("stringData", {})}
            if plural == "pods":
                obj.setdefault("status", {"phase": "Pending"})
            self._bump(obj)
            self.objects[key] = obj
            self._emit("ADDED", plural, namespace, obj)
            return copy.deepcopy(obj)

    def update(self, plural: str, namespace: str, name: str, fn: Callable[[Obj], None]) -> Obj | None:
        """Change an object in place (the kubelet's status writes); ``None`` when it is gone."""
        with self.changed:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                return None
            fn(obj)
            self._bump(obj)
            self._emit("MODIFIED", plural, namespace, obj)
            return copy.deepcopy(obj)

    def remove(self, plural: str, namespace: str, name: str) -> None:
        """Delete at once, and the objects it owns (garbage collection)."""
        with self.changed:
            obj = self.objects.pop((plural, namespace, name), None)
            if obj is None:
                return
            self._bump(obj)
            self._emit("DELETED", plural, namespace, obj)
            self._collect(obj["metadata"]["uid"])

    def delete(self, plural: str, namespace: str, name: str) -> Obj | None:
        """The API's delete: pods get a deletionTimestamp and the kubelet stops them."""
        with self.changed:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                return None
            if plural != "pods" or self.on_pod_delete is None:
                self.remove(plural, namespace, name)
                return obj
            first = "deletionTimestamp" not in obj["metadata"]
            obj["metadata"].setdefault("deletionTimestamp", now_iso())
            self._bump(obj)
            self._emit("MODIFIED", plural, namespace, obj)
            out = copy.deepcopy(obj)
        if first:
            self.on_pod_delete(namespace, name)
        return out

    def record_event(
        self, namespace: str, pod: Obj, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        """An Event about a pod, as a kubelet or the scheduler records it (repeats counted)."""
        meta = pod["metadata"]
        with self.lock:
            for ev in self.objects.values():
                if (
                    ev["kind"] == "Event"
                    and ev["involvedObject"].get("uid") == meta["uid"]
                    and ev["reason"] == reason
                    and ev["message"] == message
                ):
                    self.update(
                        "events",
                        namespace,
                        ev["metadata"]["name"],
                        lambda e: e.update(count=e["count"] + 1, lastTimestamp=now_iso()),
                    )
                    return
            self.create(
                "events",
                namespace,
                {
                    "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}"},
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": namespace,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "apiVersion": "v1",
                    },
                    "reason": reason,
                    "message": message,
                    "type": type_,
                    "count": 1,
                    "firstTimestamp": now_iso(),
                    "lastTimestamp": now_iso(),
                    "source": {
                        "component": "fake-kubelet"
                        if reason not in ("FailedScheduling", "Scheduled")
                        else "default-scheduler"
                    },
                },
            )

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _emit(self, type_: str, plural: str, namespace: str, obj: Obj) -> None:
        self.history.append(_Event(self.rv, type_, plural, namespace, copy.deepcopy(obj)))
        del self.history[:-HISTORY]
        self.changed.notify_all()

    def _collect(self, uid: str) -> None:
        owned = [
            (p, ns, n)
            for (p, ns, n), o in self.objects.items()
            if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])
        ]
        for p, ns, n in owned:
            self.delete(p, ns, n)

    def watch(
        self, plural: str, namespace: str, since: int, labels: str, fields: str, timeout_s: float
    ) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        seen = since
        while True:
            with self.changed:
                if self.history and seen < self.history[0].rv - 1:
                    raise _Gone(seen)
                batch = [e for e in self.history if e.rv > seen]
                if not batch:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._httpd is None:
                        return
                    self.changed.wait(min(left, 0.5))
                    continue
            for e in batch:
                seen = e.rv
                if (
                    e.plural == plural
                    and e.namespace == namespace
                    and match_labels(labels, e.obj["metadata"].get("labels") or {})
                    and match_fields(fields, e.obj)
                ):
                    yield {"type": e.type, "object": e.obj}


class _Gone(Exception):
    pass


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}
_VERBS = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}


@dataclass(frozen=True)
class _Call:
    """One routed request: ``/api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]]`` and its verb."""

    ns: str
    plural: str
    name: str | None
    sub: str | None
    verb: str
    watching: bool
    path: str

    @property
    def resource(self) -> str:
        """The RBAC resource: ``pods``, or ``pods/log`` for a subresource."""
        return self.plural if self.sub is None else f"{self.plural}/{self.sub}"


class _FrameWriter:
    """Unmasked server-to-client WebSocket frames, one writer at a time."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack("!H", n)
        else:
            head += bytes([127]) + struct.pack("!Q", n)
        with self._lock:
            self._out.write(head + payload)
            self._out.flush()


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    # one entry point for every verb
    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _send(self, code: int, body: Obj, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        with self.api.lock:
            self.api.requests.append(Request(self.command, urlsplit(self.path).path, code))

    def _error(self, code: int, message: str, headers: dict[str, str] | None = None, **details: Any) -> None:
        self._send(code, status_body(code, _REASONS.get(code, "Unknown"), message, details), headers)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _serve(self) -> None:
        """Authenticate, route, apply the test's injected faults and RBAC, then answer."""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._body()  # read before any answer so keep-alive stays in step
        if self.headers.get("Authorization") != f"Bearer {self.api.token}":
            self._error(401, "Unauthorized")
            return
        call = self._route(url.path, query)
        if call is None or self._refused(call):
            return
        if call.sub is not None:
            self._subresource(call, query)
            return
        handler = {
            "GET": self._get,
            "POST": self._post,
            "DELETE": self._delete,
            "PATCH": self._patch,
            "PUT": self._patch,
        }.get(self.command)
        if handler is not None:
            handler(call, query, body)

    def _route(self, path: str, query: dict[str, str]) -> _Call | None:
        m = _PATH.match(path)
        if not m or m.group("plural") not in KINDS:
            self._error(404, f"the server could not find the requested resource ({path})")
            return None
        name, sub = m.group("name"), m.group("sub")
        watching = query.get("watch") in ("true", "1")
        verb = _VERBS.get(self.command) or ("watch" if watching else "get" if name else "list")
        return _Call(m.group("ns"), m.group("plural"), name, sub, verb, watching, path)

    def _refused(self, call: _Call) -> bool:
        """Answer with an injected fault or a 403 when one applies; whether one did."""
        api = self.api
        with api.lock:
            fault_hit = next(
                (
                    f
                    for f in api.faults
                    if f.count > 0 and f.method == self.command and f.path.search(call.path)
                ),
                None,
            )
            if fault_hit is not None:
                fault_hit.count -= 1
            forbidden = (call.verb, call.resource) in api.forbidden or (
                api.allowed is not None and (call.verb, call.resource) not in api.allowed
            )
        if fault_hit is not None:
            headers = {"Retry-After": "1"} if fault_hit.status == 429 else None
            self._error(fault_hit.status, fault_hit.message or f"injected HTTP {fault_hit.status}", headers)
            return True
        if forbidden:
            self._error(
                403,
                f'{call.resource} is forbidden: User "{api.user}" cannot {call.verb} resource "{call.plural}"'
                + (f' "{call.sub}"' if call.sub else "")
                + f' in API group "" in the namespace "{call.ns}"',
                kind=call.plural,
                name=call.name or "",
            )
            return True
        return False

    def _subresource(self, call: _Call, query: dict[str, str]) -> None:
        if call.sub == "log":
            self._log(call.ns, call.name or "", query)
        elif call.sub == "portforward" and (self.headers.get("Upgrade") or "").lower() == "websocket":
            self._portforward(call.ns, call.name or "", query)
        else:
            self._error(404, f"subresource {call.sub} is not implemented by the fake")

    def _object_or_404(self, call: _Call, obj: Obj | None) -> None:
        if obj is None:
            self._error(404, f'{call.plural} "{call.name}" not found', kind=call.plural, name=call.name)
        else:
            self._send(200, obj)

    def _get(self, call: _Call, query: dict[str, str], body: Any) -> None:
        if call.name is None:
            self._list(call.plural, call.ns, query, call.watching)
        else:
            self._object_or_404(call, self.api.get(call.plural, call.ns, call.name))

    def _delete(self, call: _Call, query: dict[str, str], body: Any) -> None:
        self._object_or_404(call, self.api.delete(call.plural, call.ns, call.name or ""))

    def _post(self, call: _Call, query: dict[str, str], body: Any) -> None:
        api = self.api
        if not isinstance(body, dict) or not body.get("metadata", {}).get("name"):
            self._error(400, "the fake needs metadata.name on create")
            return
        with api.lock:
            api.received.append(copy.deepcopy(body))
        try:
            self._send(201, api.create(call.plural, call.ns, body))
        except KeyError:
            name = body["metadata"]["name"]
            self._error(409, f'{call.plural} "{name}" already exists', kind=call.plural, name=name)

    def _list(self, plural: str, ns: str, query: dict[str, str], watching: bool) -> None:
        api = self.api
        labels = query.get("labelSelector", "")
        fields = query.get("fieldSelector", "")
        if not watching:
            with api.lock:
                items = [o for o in api.list(plural, ns, labels) if match_fields(fields, o)]
                rv = str(api.rv)
            self._send(
                200,
                {
                    "kind": KINDS[plural] + "List",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                },
            )
            return
        since = int(query.get("resourceVersion") or api.rv)
        timeout = float(query.get("timeoutSeconds") or 30)
        events = api.watch(plural, ns, since, labels, fields, timeout)
        try:
            first = next(events, None)
        except _Gone:
            self._error(410, f"too old resource version: {since}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with api.lock:
            api.requests.append(Request("GET", urlsplit(self.path).path + "?watch", 200))
        try:
            try:
                if first is not None:
                    self._chunk(json.dumps(first).encode() + b"\n")
                    for event in events:
                        self._chunk(json.dumps(event).encode() + b"\n")
            except _Gone:
                gone = {"type": "ERROR", "object": status_body(410, "Expired", "too old")}
                self._chunk(json.dumps(gone).encode() + b"\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):  # the client stopped watching (its read timeout)
            return

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _patch(self, call: _Call, query: dict[str, str], body: Any) -> None:
        api = self.api
        plural, ns, name = call.plural, call.ns, call.name or ""
        kind = (self.headers.get("Content-Type") or "").split(";")[0]
        if self.command == "PATCH" and kind not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            # the fake implements merge patches only; a real server would read a JSON Patch here
            self._error(415, f"the fake supports merge patches only, not {kind or 'no content type'}")
            return
        with api.changed:
            obj = api.objects.get((plural, ns, name))
            if obj is None:
                self._error(404, f'{plural} "{name}" not found', kind=plural, name=name)
                return
            wanted = (body or {}).get("metadata", {}).get("resourceVersion")
            if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                self._error(
                    409,
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    kind=plural,
                    name=name,
                )
                return
            if self.command == "PUT":
                new = copy.deepcopy(body)
                new["metadata"] = {**obj["metadata"], **{k: v for k, v in body["metadata"].items()}}
            else:
                new = merge_patch(obj, body)
            for keep in ("uid", "creationTimestamp", "namespace", "name"):
                new["metadata"][keep] = obj["metadata"][keep]
            obj.clear()
            obj.update(new)
            api._bump(obj)
            api._emit("MODIFIED", plural, ns, obj)
            out = copy.deepcopy(obj)
        self._send(200, out)

    def _portforward(self, ns: str, pod: str, query: dict[str, str]) -> None:
        """``pods/portforward`` over WebSocket, channel protocol ``v4.channel.k8s.io`` (one port).

        As the API server does: the first frame on the data channel (0) and on the error channel
        (1) carries the port number (2 bytes, little-endian); then every binary frame is a
        channel byte plus data. The fake connects to the pod IP (this host) on that port.
        """
        api = self.api
        with api.lock:
            obj = api.objects.get(("pods", ns, pod))
        if obj is None:
            self._error(404, f'pods "{pod}" not found', kind="pods", name=pod)
            return
        port = int(query.get("ports", "0").split(",")[0])
        self._upgrade_to_websocket()
        send = _FrameWriter(self.wfile).send
        prefix = struct.pack("<H", port)
        try:
            send(0x2, b"\x00" + prefix)
            send(0x2, b"\x01" + prefix)
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError as exc:
                send(0x2, b"\x01" + f"error forwarding port {port} to pod {pod}: {exc}".encode())
                send(0x8, b"")
                return
            upstream.settimeout(None)
            self._forward(send, upstream)
        except (OSError, ValueError):
            return

    def _upgrade_to_websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        self.wfile.flush()
        with self.api.lock:
            self.api.requests.append(Request("GET", urlsplit(self.path).path, 101))
        self.close_connection = True

    def _forward(self, send: Callable[[int, bytes], None], upstream: socket.socket) -> None:
        """Pipe the pod's port and the client's data-channel frames both ways until either ends."""

        def pump() -> None:
            try:
                while True:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    send(0x2, b"\x00" + data)
            except (OSError, ValueError):  # the client went, and the handler closed the stream
                return
            with contextlib.suppress(OSError, ValueError):
                send(0x8, b"")

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        try:
            while True:
                frame = self._read_frame()
                if frame is None or frame[0] == 0x8:
                    break
                opcode, payload = frame
                if opcode == 0x9:
                    send(0xA, payload)
                elif opcode in (0x1, 0x2) and payload and payload[0] == 0:
                    upstream.sendall(payload[1:])
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
            pumper.join(5)
            upstream.close()

    def _read_frame(self) -> tuple[int, bytes] | None:
        """One client frame (masked, as clients must send them); ``None`` at the end of the stream."""
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        opcode = head[0] & 0x0F
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\x00\x00\x00\x00"
        data = self.rfile.read(n)
        if not n:
            return opcode, b""
        key = (mask * (n // 4 + 1))[:n]
        return opcode, (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")

    def _log(self, ns: str, pod: str, query: dict[str, str]) -> None:
        api = self.api
        container = query.get("container", "")
        with api.lock:
            obj = api.objects.get(("pods", ns, pod))
            if obj is not None and not container:
                container = obj["spec"]["containers"][0]["name"]
            source = api.logs.get((ns, pod, container))
        if obj is None:
            self._error(404, f'pods "{pod}" not found', kind="pods", name=pod)
            return
        if source is None:
            self._error(400, f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating')
            return
        follow = query.get("follow") in ("true", "1")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with api.lock:
            api.requests.append(Request("GET", urlsplit(self.path).path, 200))
        try:
            with open(source.path, "rb") as f:
                while True:
                    data = f.read(65536)
                    if data:
                        self._chunk(data)
                        continue
                    if not follow or not source.running() or api._httpd is None:
                        rest = f.read()
                        if rest:
                            self._chunk(rest)
                        break
                    time.sleep(0.05)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            return
