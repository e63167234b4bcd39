"""The KubeRay CRD schemas the chart tests validate against are the ones their README says (fast tier)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from phifleet.helm import KUBERAY_SCHEMAS_DIR

README = (KUBERAY_SCHEMAS_DIR / "README.md").read_text()
ROWS = re.findall(r"^\| (\S+\.json) \| (\w+) \| `([0-9a-f]{64})` \|$", README, flags=re.M)


def test_readme_lists_every_schema_file() -> None:
    assert sorted(f for f, _, _ in ROWS) == sorted(p.name for p in KUBERAY_SCHEMAS_DIR.glob("*.json"))
    assert {kind for _, kind, _ in ROWS} == {"RayCluster", "RayJob", "RayService"}


@pytest.mark.parametrize(("name", "kind", "digest"), ROWS)
def test_schema_file_is_the_recorded_extraction(name: str, kind: str, digest: str) -> None:
    path = KUBERAY_SCHEMAS_DIR / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{name} changed without a new README row"
    schema = json.loads(path.read_text())
    assert schema["type"] == "object"
    assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(schema["properties"])
    assert name.startswith(kind.lower())
