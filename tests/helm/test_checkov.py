"""checkov, offline, over everything the chart renders for each example values file.

checkov's helm framework renders a chart with its default values and no --api-versions, which our KubeRay CRD
check refuses; so the test does what that framework does (helm template, then the kubernetes checks) with the
example values. checkov has no checks for RayService/RayJob, so each Ray pod template is also handed to it as a
Pod, next to the NetworkPolicy that selects it. Skips live in the chart as `checkov.io/skipN` annotations, each
with its reason.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import CHART, EXAMPLES, ROOT, render

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"


def ray_pods(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
    templates = [("head", spec["headGroupSpec"]["template"])]
    templates += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    if "submitterPodTemplate" in doc["spec"]:
        templates.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    pods = []
    for name, template in templates:
        meta = {**template["metadata"], "name": f"{doc['metadata']['name']}-{name}"}
        meta["namespace"] = doc["metadata"]["namespace"]
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
    return pods


def test_checkov_finds_no_failed_checks(helm, tmp_path: Path):
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run scripts/install_checkov.sh (make test does)")
    for values in EXAMPLES:
        docs = render(helm, "-f", str(CHART / values))
        docs += [pod for d in docs if d["kind"] in ("RayService", "RayJob") for pod in ray_pods(d)]
        (tmp_path / values).write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(
        [str(CHECKOV), "--framework", "kubernetes", "-d", str(tmp_path), "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(proc.stdout)
    results = report["results"] if isinstance(report, dict) else report[0]["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results["failed_checks"]]
    assert not failed, "\n".join(failed)
    skipped = results["skipped_checks"]
    assert skipped and all(c["check_result"].get("suppress_comment") for c in skipped)  # every skip has a reason
    assert len(results["passed_checks"]) > 100
