"""checkov, offline, over everything the chart renders for each example values file.

checkov's helm framework renders a chart with its default values and no --api-versions, which our KubeRay CRD
check refuses; so the test does what that framework does (helm template, then the kubernetes checks) with the
example values. checkov has no checks for RayService/RayJob, so each Ray pod template is also handed to it as a
Pod, next to the NetworkPolicy that selects it. Skips live in the chart as `checkov.io/skipN` annotations, each
with its reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.checkov import assert_clean, checkov_results
from tests.helm.conftest import CHART, EXAMPLES, render

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)


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
    for values in EXAMPLES:
        docs = render(helm, "-f", str(CHART / values))
        docs += [pod for d in docs if d["kind"] in ("RayService", "RayJob") for pod in ray_pods(d)]
        (tmp_path / values).write_text(yaml.safe_dump_all(docs))
    results = checkov_results("kubernetes", tmp_path)
    assert results["skipped_checks"]  # the justified skips are read, not ignored
    assert_clean(results, min_passed=100)
