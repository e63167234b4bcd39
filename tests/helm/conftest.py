"""Helm rendering helpers: the real `helm` binary (installed by scripts/install_helm.py) and real schemas.

No Kubernetes API server can run here, so objects are validated offline: core kinds with kubernetes-validate
(strict: unknown fields fail), KubeRay kinds with the v1.7.0 CRD schemas the package carries (helm/schemas), made
strict the same way (an API server would silently prune an unknown field; here it fails the test).
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import jsonschema
import yaml

from phifleet.helm import CHART_DIR as CHART
from phifleet.helm import KUBERAY_SCHEMAS_DIR as KUBERAY_SCHEMAS

KUBE_VERSION = "1.33.0"
EXAMPLES = sorted(p.name for p in CHART.glob("values-*.yaml"))


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(helm: str, *args: str, release: str = "r") -> list[dict[str, Any]]:
    """`helm template` against a cluster that serves ray.io/v1 and Prometheus Operator CRDs."""
    out = run_helm(
        helm,
        "template",
        release,
        str(CHART),
        "--namespace",
        "phifleet",
        "--kube-version",
        KUBE_VERSION,
        "--api-versions",
        "ray.io/v1",
        "--api-versions",
        "monitoring.coreos.com/v1",
        *args,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def strict(schema: Any) -> Any:
    """additionalProperties: false on every object schema that lists properties and keeps no unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def kuberay_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((KUBERAY_SCHEMAS / f"{kind.lower()}-v1.json").read_text())
    schema = strict(copy.deepcopy(schema))
    # metadata is validated by the API server's ObjectMeta, not the CRD schema
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
