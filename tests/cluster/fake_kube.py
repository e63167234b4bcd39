"""An in-process fake of the Kubernetes API server, for the kubernetes client that `phifleet cluster` uses.

A fake because no API server can run here — the only fake in these tests; everything else is the real kubernetes
client, the real chart (helm template) and real schemas. It is strict where a real API server is, and answers the
way one does:
- bodies are validated: RayJob/RayService against KubeRay v1.7.0's CRD schemas (unknown fields rejected), core and
  networking objects with kubernetes-validate (strict) — after a patch too;
- refusals are Kubernetes `Status` objects with the real messages: 401 `Unauthorized` for a wrong bearer token;
  403 `Forbidden` from RBAC (`rayjobs.ray.io is forbidden: User "x" cannot create resource "rayjobs" in API group
  "ray.io" in the namespace "ns"`) when `rules` (a Role's rules) do not grant the verb; 404 `NotFound` for a missing
  object; 409 `AlreadyExists`; 422 `Invalid`;
- a resource type nobody serves (no KubeRay CRDs) is the API server's plain-text `404 page not found`
  (k8s.io/apiserver pkg/util/notfoundhandler: `http.NotFound` at the end of the delegation chain), not a Status;
- merge patches, deletes, and the garbage collector: deleting an object deletes what names it in ownerReferences;
- every resource request is logged as (verb, group, resource), RBAC's terms, so tests can derive the Role the CLI
  needs from what it really calls;
- `faults` makes one (verb, resource) fail with a given Status, to test cleanup.
A RayJob's "operator" is a callback the test gives (`on_get`); `pod_blockers` tells it whether the job's pods could
start (their ServiceAccount, claims and ConfigMaps exist), as the kubelet and admission would.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate

from tests.helm.conftest import KUBE_VERSION, kuberay_validator

PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/v1)/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?$"
)
# plural -> (group, kind): what this fake serves
RESOURCES = {
    "rayjobs": ("ray.io", "RayJob"),
    "rayservices": ("ray.io", "RayService"),
    "configmaps": ("", "ConfigMap"),
    "services": ("", "Service"),
    "serviceaccounts": ("", "ServiceAccount"),
    "persistentvolumeclaims": ("", "PersistentVolumeClaim"),
    "events": ("", "Event"),
    "networkpolicies": ("networking.k8s.io", "NetworkPolicy"),
}
PLURALS = {kind: plural for plural, (_, kind) in RESOURCES.items()}
NOT_FOUND_PAGE = "404 page not found\n"


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    out.update(reason=reason, **({"details": details} if details else {}), code=code)
    return out


def _resource(plural: str) -> str:
    group = RESOURCES[plural][0]
    return f"{plural}.{group}" if group else plural


def _details(plural: str, name: str | None) -> dict[str, Any]:
    group = RESOURCES[plural][0]
    return {**({"name": name} if name else {}), **({"group": group} if group else {}), "kind": plural}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def grants(rules: list[dict[str, Any]], verb: str, group: str, plural: str) -> bool:
    """Whether RBAC rules (a Role's `rules`) allow `verb` on `plural` in API group `group`."""
    return any(
        group in r.get("apiGroups", [])
        and (plural in r.get("resources", []) or "*" in r.get("resources", []))
        and (verb in r.get("verbs", []) or "*" in r.get("verbs", []))
        for r in rules
    )


class FakeKube:
    def __init__(
        self,
        serve_kuberay: bool = True,
        rules: list[dict[str, Any]] | None = None,
        user: str = "fake-user",
        token: str = "fake-token",
        served: set[str] | None = None,
    ) -> None:
        """serve_kuberay=False: no KubeRay CRDs (ray.io is neither discovered nor served); `served` narrows the
        KubeRay plurals that are (a partial install); rules=None: RBAC allows everything."""
        self.serve_kuberay = serve_kuberay
        self.served = {"rayjobs", "rayservices"} if served is None else served
        self.rules, self.user, self.token = rules, user, token
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name) -> object
        self.on_get: dict[str, Callable[[dict[str, Any]], None]] = {}  # plural -> called before each read
        self.requests: list[tuple[str, str, str]] = []  # (verb, group, plural) of every resource request
        self.faults: dict[tuple[str, str], dict[str, Any]] = {}  # (verb, plural) -> Status to answer with
        self.lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def reply(self, code: int, body: dict[str, Any] | str) -> None:
                text = isinstance(body, str)
                data = (body if text else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self) -> Any:
                length = int(self.headers.get("Content-Length", 0))
                return json.loads(self.rfile.read(length)) if length else None

            def handle_any(self, method: str) -> None:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self.reply(401, status(401, "Unauthorized", "Unauthorized"))
                    return
                url = urlparse(self.path)
                body = self.body() if method in ("POST", "PATCH", "PUT") else None
                self.reply(*fake.handle(method, url, body, self.headers.get("Content-Type", "")))

            def do_GET(self) -> None:
                self.handle_any("GET")

            def do_POST(self) -> None:
                self.handle_any("POST")

            def do_PATCH(self) -> None:
                self.handle_any("PATCH")

            def do_DELETE(self) -> None:
                self.handle_any("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKube:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, directory: Path, token: str | None = None) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": token or self.token}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # --- state ----------------------------------------------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as the operator, Helm or another client would have created it."""
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("namespace", "default")
        with self.lock:
            self.objects[(PLURALS[obj["kind"]], meta["namespace"], meta["name"])] = obj
        return obj

    def of_kind(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        plural = PLURALS[kind]
        with self.lock:
            return [o for (p, n, _), o in self.objects.items() if p == plural and namespace in (None, n)]

    def event(self, involved: dict[str, Any], reason: str, message: str) -> None:
        """A Warning Event about `involved`, as the RayCluster controller, scheduler or kubelet would record it."""
        meta = involved["metadata"]
        self.put(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
                "involvedObject": {"kind": involved["kind"], "name": meta["name"], "uid": meta.get("uid", "")},
                "type": "Warning",
                "reason": reason,
                "message": message,
            }
        )

    def pod_blockers(self, rayjob: dict[str, Any]) -> list[tuple[str, str]]:
        """Why the job's pods could not start, as (event reason, message) — empty when they can. A missing
        ServiceAccount: admission refuses the pod (the RayCluster controller's FailedCreateHeadPod event); a missing
        claim: the scheduler leaves it Pending; a missing ConfigMap: the kubelet cannot mount it."""
        ns, spec = rayjob["metadata"]["namespace"], rayjob["spec"]
        cluster = spec["rayClusterSpec"]
        templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
        blockers: list[tuple[str, str]] = []
        with self.lock:
            for t in templates:
                account = t["spec"].get("serviceAccountName") or "default"
                if account != "default" and ("serviceaccounts", ns, account) not in self.objects:
                    message = f'error looking up service account {ns}/{account}: serviceaccount "{account}" not found'
                    blockers.append(("FailedCreateHeadPod", message))
                for volume in t["spec"].get("volumes", []):
                    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                    if claim and ("persistentvolumeclaims", ns, claim) not in self.objects:
                        blockers.append(("FailedScheduling", f'persistentvolumeclaim "{claim}" not found'))
                    cm = (volume.get("configMap") or {}).get("name")
                    if cm and ("configmaps", ns, cm) not in self.objects:
                        blockers.append(("FailedMount", f'configmap "{cm}" not found'))
        return sorted(set(blockers))

    # --- API ------------------------------------------------------------------------------------------------
    def handle(self, method: str, url: Any, body: Any, content_type: str) -> tuple[int, dict[str, Any] | str]:
        if url.path.rstrip("/") == "/apis":  # discovery: a non-resource URL every user may read (system:discovery)
            groups = []
            if self.serve_kuberay:
                v1 = {"groupVersion": "ray.io/v1", "version": "v1"}
                groups.append({"name": "ray.io", "versions": [v1], "preferredVersion": v1})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        m = PATH.match(url.path)
        if m is None or m["plural"] not in RESOURCES or (m["group"] or "") != RESOURCES[m["plural"]][0]:
            return 404, NOT_FOUND_PAGE
        plural, ns, name = m["plural"], m["ns"], m["name"]
        if RESOURCES[plural][0] == "ray.io" and not (self.serve_kuberay and plural in self.served):
            return 404, NOT_FOUND_PAGE  # no CRD: nothing serves the path
        query = parse_qs(url.query)
        verb = {
            "GET": "get" if name else ("watch" if query.get("watch") == ["true"] else "list"),
            "POST": "create",
            "PATCH": "patch",
            "PUT": "update",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
        group = RESOURCES[plural][0]
        with self.lock:
            self.requests.append((verb, group, plural))
        if self.rules is not None and not grants(self.rules, verb, group, plural):
            named = f' "{name}"' if name else ""
            message = (
                f'{_resource(plural)}{named} is forbidden: User "{self.user}" cannot {verb} resource "{plural}" '
                f'in API group "{group}" in the namespace "{ns}"'
            )
            return 403, status(403, "Forbidden", message, _details(plural, name))
        if (verb, plural) in self.faults:
            fault = self.faults[(verb, plural)]
            return fault["code"], fault
        if verb == "create" and name is None:
            return self.create(plural, ns, body)
        if verb in ("get", "list"):
            return self.read(plural, ns, name, query)
        if verb == "patch":
            return self.patch(plural, ns, name, body, content_type)
        if verb == "delete":
            return self.delete(plural, ns, name)
        return 405, status(405, "MethodNotAllowed", f"{method} is not supported on {url.path} by this fake")

    def _missing(self, plural: str, name: str) -> tuple[int, dict[str, Any]]:
        message = f'{_resource(plural)} "{name}" not found'
        return 404, status(404, "NotFound", message, _details(plural, name))

    def _validate(self, plural: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if RESOURCES[plural][0] == "ray.io":
            errors = sorted(kuberay_validator(obj["kind"]).iter_errors(obj), key=str)
            if errors:
                return 422, status(422, "Invalid", "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:3]))
            return None
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            return 422, status(422, "Invalid", str(exc))
        return None

    def read(self, plural: str, ns: str, name: str | None, query: dict[str, list[str]]) -> tuple[int, Any]:
        if plural in self.on_get:
            for obj in self.of_kind(RESOURCES[plural][1], ns):
                self.on_get[plural](obj)
        with self.lock:
            if name is not None:
                obj = self.objects.get((plural, ns, name))
                return (200, obj) if obj is not None else self._missing(plural, name)
            selector = query.get("labelSelector", [""])[0]
            wanted = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
            items = [
                o
                for (p, n, _), o in self.objects.items()
                if p == plural and n == ns and wanted.items() <= (o["metadata"].get("labels") or {}).items()
            ]
        return 200, {"kind": f"{RESOURCES[plural][1]}List", "apiVersion": "v1", "items": items, "metadata": {}}

    def create(self, plural: str, ns: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("kind") != RESOURCES[plural][1]:
            return 400, status(400, "BadRequest", f"kind {body.get('kind')!r} posted to {plural}")
        if body["metadata"].get("namespace", ns) != ns:
            return 400, status(400, "BadRequest", "the namespace of the object does not match the request")
        invalid = self._validate(plural, body)
        if invalid:
            return invalid
        key = (plural, ns, body["metadata"]["name"])
        with self.lock:
            if key in self.objects:
                message = f'{_resource(plural)} "{key[2]}" already exists'
                return 409, status(409, "AlreadyExists", message, _details(plural, key[2]))
            body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp="2026-11-27T00:00:00Z")
            self.objects[key] = body
        return 201, body

    def patch(self, plural: str, ns: str, name: str, patch: Any, content_type: str) -> tuple[int, dict[str, Any]]:
        if "merge-patch" not in content_type:  # JSON merge patch, and strategic merge for these plain fields
            return 415, status(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            if obj is None:
                return self._missing(plural, name)
            patched = merge_patch(copy.deepcopy(obj), patch)
            invalid = self._validate(plural, patched)
            if invalid:
                return invalid
            self.objects[(plural, ns, name)] = patched
        return 200, patched

    def delete(self, plural: str, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            obj = self.objects.pop((plural, ns, name), None)
            if obj is None:
                return self._missing(plural, name)
            self._collect(obj["metadata"]["uid"])
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {}}

    def _collect(self, uid: str) -> None:
        """The garbage collector (background propagation, kubectl's default): dependents of a deleted owner go too."""
        for key, obj in list(self.objects.items()):
            if key in self.objects and any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences", [])):
                del self.objects[key]
                self._collect(obj["metadata"]["uid"])


class ScriptedOperator:
    """Plays KubeRay for RayJobs whose outcome a test scripts: each read moves a job one status along `script`,
    but only once its pods could start (FakeKube.pod_blockers) — until then the job stays Initializing and the
    reason is recorded as an Event once, as the RayCluster controller and the scheduler would."""

    def __init__(self, fake: FakeKube, script: list[dict[str, Any]]) -> None:
        self.fake, self.script = fake, script
        self.steps: dict[str, int] = {}
        self.reported: set[str] = set()

    def __call__(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        blockers = self.fake.pod_blockers(job)
        if blockers:
            job["status"] = {"jobDeploymentStatus": "Initializing", "rayClusterName": f"{name}-abcde"}
            if name not in self.reported:
                for reason, message in blockers:
                    self.fake.event(job, reason, message)
                self.reported.add(name)
            return
        step = self.steps.get(name, 0)
        job["status"] = copy.deepcopy(self.script[min(step, len(self.script) - 1)])
        self.steps[name] = step + 1
