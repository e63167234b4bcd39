"""An in-process fake of the Kubernetes API server, for the kubernetes client that `phifleet cluster` uses.

A fake because no API server can run here. It is strict where a real one is: RayJob/RayService bodies are
validated against KubeRay v1.7.0's CRD schemas (unknown fields rejected), core objects with kubernetes-validate;
names conflict with 409; missing objects are 404 Status objects. A RayJob's "operator" is a callback the test
gives (e.g. one that really runs the entrypoint).
"""

from __future__ import annotations

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

CUSTOM = re.compile(r"^/apis/ray\.io/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?$")
CORE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>configmaps|services)(?:/(?P<name>[^/]+))?$")
KINDS = {"rayjobs": "RayJob", "rayservices": "RayService", "configmaps": "ConfigMap", "services": "Service"}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeKube:
    def __init__(self, serve_kuberay: bool = True) -> None:
        self.serve_kuberay = serve_kuberay
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name) -> object
        self.on_get: dict[str, Callable[[dict[str, Any]], None]] = {}  # plural -> called before each read
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                code, body = fake.get(urlparse(self.path))
                self.reply(code, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                code, body = fake.create(urlparse(self.path).path, json.loads(self.rfile.read(length)))
                self.reply(code, body)

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

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # --- API ------------------------------------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> None:
        """Store an object as the operator or another client would have created it."""
        plural = {v: k for k, v in KINDS.items()}[obj["kind"]]
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        with self.lock:
            self.objects[(plural, meta.get("namespace", "default"), meta["name"])] = obj

    def _match(self, path: str) -> tuple[str, str, str | None] | None:
        m = CUSTOM.match(path) or CORE.match(path)
        return (m["plural"], m["ns"], m["name"]) if m else None

    def get(self, url) -> tuple[int, dict[str, Any]]:
        if url.path.rstrip("/") == "/apis":
            groups = []
            if self.serve_kuberay:
                v1 = {"groupVersion": "ray.io/v1", "version": "v1"}
                groups.append({"name": "ray.io", "versions": [v1], "preferredVersion": v1})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        match = self._match(url.path)
        if match is None:
            return 404, status(404, "NotFound", f"the server could not find the requested resource {url.path}")
        plural, ns, name = match
        if plural in self.on_get:
            for (p, n, _), obj in list(self.objects.items()):
                if p == plural and n == ns:
                    self.on_get[plural](obj)
        with self.lock:
            if name is not None:
                obj = self.objects.get((plural, ns, name))
                if obj is None:
                    return 404, status(404, "NotFound", f'{plural} "{name}" not found')
                return 200, obj
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            wanted = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
            items = [
                o
                for (p, n, _), o in self.objects.items()
                if p == plural and n == ns and wanted.items() <= (o["metadata"].get("labels") or {}).items()
            ]
        return 200, {"kind": f"{KINDS[plural]}List", "apiVersion": "v1", "items": items, "metadata": {}}

    def create(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        match = self._match(path)
        if match is None or match[2] is not None:
            return 405, status(405, "MethodNotAllowed", f"cannot POST {path}")
        plural, ns, _ = match
        if body.get("kind") != KINDS[plural]:
            return 400, status(400, "BadRequest", f"kind {body.get('kind')!r} posted to {plural}")
        if body["metadata"].get("namespace", ns) != ns:
            return 400, status(400, "BadRequest", "the namespace of the object does not match the request")
        if plural in ("rayjobs", "rayservices"):
            errors = sorted(kuberay_validator(body["kind"]).iter_errors(body), key=str)
            if errors:
                return 422, status(422, "Invalid", "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:3]))
        else:
            try:
                kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                return 422, status(422, "Invalid", str(exc))
        key = (plural, ns, body["metadata"]["name"])
        with self.lock:
            if key in self.objects:
                return 409, status(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
            body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp="2026-11-27T00:00:00Z")
            self.objects[key] = body
        return 201, body
