"""The Hugging Face Hub fetch as the chart renders it: the token reaches only the fetch init container, as
``HF_TOKEN`` from a secretKeyRef (never a value, never in the script), and the rendered script, run in ``sh`` with
the env the kubelet would build, fetches a private repo from tests/cluster/fake_hub.py (a stand-in for the Hub,
which cannot be reached from here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.checkov import assert_clean, checkov_results
from tests.cluster.fake_hub import FakeHub
from tests.helm.conftest import CHART, KUBE_VERSION, by_kind, kuberay_validator, render, run_helm

pytestmark = pytest.mark.slow  # runs helm and a fetch subprocess (tests/conftest.py)

TOKEN = "hf_renderTestTokenNeverInObjects"
PHI4_FILES = {"config.json": b'{"model_type": "phi3"}', "model.safetensors": bytes(range(256)) * 64}


def rendered(helm: str, mount: Path, *sets: str, kind: str = "RayService") -> dict[str, Any]:
    """The RayService (or RayJob) of a release fetching hf://microsoft/phi-4 onto an emptyDir at ``mount``."""
    base = [
        f"model.mountPath={mount}",
        "model.fetch.source=hf://microsoft/phi-4",
        "model.fetch.revision=main",
        "apiKeys.keys={sk-aaaaaaaa}",
        f"serve.config.engine.model={mount}/phi-4",
        f"job.config.engine.model={mount}/phi-4",
    ]
    if kind == "RayJob":
        base += ["serve.enabled=false", "job.enabled=true"]
    docs = render(helm, *[a for s in [*base, *sets] for a in ("--set", s)])
    (obj,) = by_kind(docs, kind)
    errors = sorted(kuberay_validator(kind).iter_errors(obj), key=str)
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    return obj


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = obj["spec"].get("rayClusterConfig") or obj["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]


def fetch_inits(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for spec in pod_specs(obj) for c in spec.get("initContainers", []) if c["name"] == "fetch-model"]


def test_the_token_secret_reaches_only_the_fetch_init_container_as_a_secret_key_ref(helm, tmp_path):
    for kind in ("RayService", "RayJob"):
        obj = rendered(helm, tmp_path, "model.fetch.tokenSecret.name=hf-token", kind=kind)
        inits = fetch_inits(obj)
        assert inits, kind
        for init in inits:
            env = {e["name"]: e for e in init["env"]}
            assert env["HF_TOKEN"] == {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
            }
            assert env["PHIFLEET_WEIGHTS_TOKEN_SECRET"]["value"] == "hf-token/token"  # a name, for error messages
            assert "HF_TOKEN" not in init["args"][0] and "hf-token" not in init["args"][0]
            assert "hf-token" not in " ".join(init["command"])
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [init]}},
                KUBE_VERSION,
                strict=True,
            )
        for spec in pod_specs(obj):  # the Ray containers, which run user code, never see it
            for container in spec["containers"]:
                assert "HF_TOKEN" not in {e["name"] for e in container.get("env", [])}, container["name"]

    obj = rendered(helm, tmp_path, "model.fetch.tokenSecret.name=hf-token", "model.fetch.tokenSecret.key=hf")
    (init, *_) = fetch_inits(obj)
    assert {"name": "hf-token", "key": "hf"} in [e.get("valueFrom", {}).get("secretKeyRef") for e in init["env"]]
    (init, *_) = fetch_inits(rendered(helm, tmp_path))  # no Secret: anonymous, no HF_TOKEN at all
    assert not {"HF_TOKEN", "PHIFLEET_WEIGHTS_TOKEN_SECRET"} & {e["name"] for e in init["env"]}


def test_checkov_passes_with_a_token_secret(helm, tmp_path):
    """CKV_K8S_35 (secrets as files) is skipped with its reason only where the Hub token is an env var."""
    from tests.helm.test_checkov import ray_pods

    sets = ["model.fetch.source=hf://microsoft/phi-4", "model.fetch.tokenSecret.name=hf-token"]
    sets += ["apiKeys.keys={sk-aaaaaaaa}", "serve.config.engine.model=/models/phi-4"]
    docs = render(helm, *[a for s in sets for a in ("--set", s)])
    docs += [pod for d in docs if d["kind"] in ("RayService", "RayJob") for pod in ray_pods(d)]
    (tmp_path / "release.yaml").write_text(yaml.safe_dump_all(docs))
    results = checkov_results("kubernetes", tmp_path)
    assert "CKV_K8S_35" in {c["check_id"] for c in results["skipped_checks"]}
    assert_clean(results, min_passed=100)


@pytest.mark.parametrize(
    "bad",
    ["model.fetch.tokenSecret.name=HF_Token", "model.fetch.tokenSecret.value=hf_abc", "model.fetch.tokenSecret.key="],
)
def test_token_secret_values_the_schema_refuses(helm, bad):
    proc = run_helm(
        helm, "lint", "--strict", str(CHART), "--set", "apiKeys.keys={sk-aaaaaaaa}", "--set", bad, check=False
    )
    assert proc.returncode != 0 and "model/fetch/tokenSecret" in proc.stdout + proc.stderr


def run_init(
    init: dict[str, Any], secrets: dict[str, dict[str, str]], extra: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The init container's own command with the env the kubelet builds (secretKeyRefs resolved from ``secrets``)."""
    env: dict[str, str] = {}
    for e in init["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        env[e["name"]] = secrets[ref["name"]][ref["key"]] if ref else e["value"]
    env |= {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **extra}
    return subprocess.run([*init["command"], init["args"][0]], env=env, capture_output=True, text=True, timeout=120)


def test_the_rendered_fetch_reads_a_private_repo_with_the_secrets_token(helm, tmp_path):
    mount = tmp_path / "models"
    (init, *_) = fetch_inits(rendered(helm, mount, "model.fetch.tokenSecret.name=hf-token"))
    with FakeHub(token=TOKEN) as hub:
        repo = hub.repo("microsoft/phi-4", private=True, lfs={"model.safetensors"})
        commit = repo.commit(PHI4_FILES)
        extra = {"HF_ENDPOINT": hub.url, "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_XET": "1"}

        refused = run_init(init, {"hf-token": {"token": "hf_notTheRightOne"}}, extra)
        assert refused.returncode == 1 and "Secret 'hf-token'" in refused.stderr
        assert "hf_notTheRightOne" not in refused.stdout + refused.stderr
        assert not list(mount.rglob(".phifleet-weights.json"))

        done = run_init(init, {"hf-token": {"token": TOKEN}}, extra)
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr
        assert {r.authorization for r in hub.requests if r.path.startswith("/api/models/")} == {
            f"Bearer {TOKEN}",
            "Bearer hf_notTheRightOne",
        }
    marker = json.loads((mount / "phi-4" / ".phifleet-weights.json").read_text())
    assert (marker["commit"], marker["verified"]) == (commit, "hub")
    assert (mount / "phi-4" / "model.safetensors").read_bytes() == PHI4_FILES["model.safetensors"]
