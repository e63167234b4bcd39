"""infra/azure checked offline: HCL parsed with python-hcl2 (no provider can be downloaded here, so no
`terraform validate`), the invariants that tie it to the chart asserted from both files, and checkov."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.checkov import assert_clean, checkov_results

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
AZURE = ROOT / "infra" / "azure"
CHART_VALUES = ROOT / "helm" / "phifleet" / "values.yaml"


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    """All .tf files merged: {'resource': {type: {name: body}}, 'variable': {...}, 'locals': {...}, ...}."""
    merged: dict[str, Any] = {"resource": {}, "variable": {}, "locals": {}, "output": {}, "data": {}}
    for path in sorted(AZURE.glob("*.tf")):
        doc = hcl2.loads(path.read_text())
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                bodies = {hcl_string(name): body for name, body in named.items()}
                merged["resource"].setdefault(hcl_string(rtype), {}).update(bodies)
        for key in ("variable", "output", "data"):
            for block in doc.get(key, []):
                merged[key].update({hcl_string(k): v for k, v in block.items()})
        for block in doc.get("locals", []):
            merged["locals"].update(block)
    return merged


def hcl_string(value: str) -> str:
    """python-hcl2 keeps string literals quoted: '"sku=gpu:NoSchedule"' -> 'sku=gpu:NoSchedule'."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def local_list(tf: dict[str, Any], name: str) -> list[str]:
    return [hcl_string(v) for v in tf["locals"][name]]


def local_map(tf: dict[str, Any], name: str) -> dict[str, str]:
    return {hcl_string(k): hcl_string(v) for k, v in tf["locals"][name].items()}


def parse_taint(taint: str) -> dict[str, str]:
    m = re.fullmatch(r"(?P<key>[^=]+)=(?P<value>[^:]+):(?P<effect>\w+)", taint)
    assert m, f"not a key=value:Effect taint: {taint}"
    return m.groupdict()


def chart_gpu() -> dict[str, Any]:
    return yaml.safe_load(CHART_VALUES.read_text())["gpuWorkers"]


def test_gpu_pool_scales_from_zero_and_is_tainted(tf):
    pool = tf["resource"]["azurerm_kubernetes_cluster_node_pool"]["gpu"]
    assert pool["min_count"] == 0 and pool["auto_scaling_enabled"] is True
    assert "local.gpu_taints" in pool["node_taints"] and "local.gpu_labels" in pool["node_labels"]
    assert "sku=gpu:NoSchedule" in local_list(tf, "gpu_taints")
    assert hcl_string(tf["variable"]["gpu_vm_size"]["default"]) == "Standard_NC40ads_H100_v5"
    assert "Standard_NC24ads_A100_v4" in tf["variable"]["gpu_vm_size"]["validation"][0]["condition"]


def test_chart_gpu_defaults_match_the_pool(tf):
    """Both sides read from their files: the pool's taints are tolerated, the chart selects the pool's labels."""
    gpu = chart_gpu()
    tolerations = gpu["tolerations"]
    for taint in map(parse_taint, local_list(tf, "gpu_taints")):
        assert any(
            t.get("key") == taint["key"]
            and t.get("effect") == taint["effect"]
            and (t.get("operator") == "Exists" or t.get("value") == taint["value"])
            for t in tolerations
        ), f"the chart does not tolerate {taint}"
    labels = local_map(tf, "gpu_labels")
    assert gpu["nodeSelector"].items() <= labels.items()


def test_system_pool_runs_critical_addons_only_and_cluster_has_workload_identity(tf):
    aks = tf["resource"]["azurerm_kubernetes_cluster"]["this"]
    assert aks["oidc_issuer_enabled"] is True and aks["workload_identity_enabled"] is True
    assert aks["default_node_pool"][0]["only_critical_addons_enabled"] is True
    net = aks["network_profile"][0]
    assert hcl_string(net["network_plugin"]) == "azure" and hcl_string(net["network_policy"]) == "cilium"
    assert aks["local_account_disabled"] is True


def test_workload_identity_subject_is_the_releases_service_account(tf):
    cred = tf["resource"]["azurerm_federated_identity_credential"]["phifleet"]
    assert cred["subject"] == '"system:serviceaccount:${var.namespace}:${var.service_account_name}"'
    release = tf["resource"]["helm_release"]["phifleet"]
    sets = {hcl_string(s["name"]): s["value"] for s in release["set"]}
    assert sets["serviceAccount.name"] == "${var.service_account_name}"
    assert hcl_string(release["namespace"]) == "${var.namespace}"
    assert "azurerm_user_assigned_identity.phifleet.client_id" in sets["workloadIdentity.clientId"]
    role = tf["resource"]["azurerm_role_assignment"]["blob_data"]
    assert hcl_string(role["role_definition_name"]) == "Storage Blob Data Contributor"


def test_releases_pin_kuberay_and_use_this_repositorys_chart(tf):
    releases = tf["resource"]["helm_release"]
    assert hcl_string(releases["kuberay_operator"]["version"]) == "1.7.0"
    assert hcl_string(tf["locals"]["chart"]).endswith("/../../helm/phifleet")
    assert "values-aks-h100.yaml" in releases["phifleet"]["values"][0]


def test_no_secret_has_a_default(tf):
    secretish = re.compile(r"(secret|password|key|token|credential)", re.I)
    for name, var in tf["variable"].items():
        if var.get("sensitive") or secretish.search(name):
            assert "default" not in var or var["default"] in (None, [], {}), f"variable {name} has a default"
    assert "default" not in tf["variable"]["subscription_id"]


def test_storage_is_identity_only_and_private_by_default(tf):
    sa = tf["resource"]["azurerm_storage_account"]["data"]
    assert sa["shared_access_key_enabled"] is False and sa["is_hns_enabled"] is True
    assert hcl_string(sa["network_rules"][0]["default_action"]) == "Deny"
    assert hcl_string(sa["min_tls_version"]) == "TLS1_2"


def test_checkov_terraform_has_no_failed_checks():
    assert_clean(checkov_results("terraform", AZURE), min_passed=30)


def test_terraform_fmt():
    terraform = shutil.which("terraform") or shutil.which("tofu")
    if terraform is None:
        pytest.skip("no terraform/tofu binary on PATH (none is installable from PyPI, npm or Debian): fmt unchecked")
    proc = subprocess.run([terraform, "fmt", "-check", "-recursive", str(AZURE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
