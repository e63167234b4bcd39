"""infra/azure checked offline: HCL parsed with python-hcl2 (no provider can be downloaded here, so no
`terraform validate`), the invariants that tie it to the chart asserted from both files, and checkov."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.checkov import assert_clean, checkov_results
from tests.infra.terraform import AZURE, evaluate, evaluation_error, hcl_expression, hcl_string

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
CHART_VALUES = ROOT / "helm" / "phifleet" / "values.yaml"


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
    values = evaluate({"v": "local.phifleet_values"}, {"service_account_name": "sa-x"})["v"]
    assert values["serviceAccount"] == {"create": True, "name": "sa-x"} and values["workloadIdentity"]["enabled"]
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
        if name.endswith("_secret_name"):
            continue  # the name of a Kubernetes Secret the operator creates (README), not a secret value
        if var.get("sensitive") or secretish.search(name):
            assert "default" not in var or var["default"] in (None, [], {}), f"variable {name} has a default"
    assert "default" not in tf["variable"]["subscription_id"]


def test_storage_is_identity_only_and_private_by_default(tf):
    sa = tf["resource"]["azurerm_storage_account"]["data"]
    assert sa["shared_access_key_enabled"] is False and sa["is_hns_enabled"] is True
    assert hcl_string(sa["network_rules"][0]["default_action"]) == "Deny"
    assert hcl_string(sa["min_tls_version"]) == "TLS1_2"


def dynamic_block(resource: dict[str, Any], name: str) -> dict[str, Any]:
    (block,) = [b[f'"{name}"'] for b in resource.get("dynamic", []) if f'"{name}"' in b]
    return block


WINDOWS = ("maintenance_window_auto_upgrade", "maintenance_window_node_os")


def test_upgrades_and_node_image_updates_happen_in_weekly_maintenance_windows(tf):
    """azurerm 4.x `maintenance_window_auto_upgrade` / `maintenance_window_node_os` (frequency, interval, duration
    required; duration 4-24 h): the patch channel and the NodeImage channel drain nodes only inside them."""
    aks = tf["resource"]["azurerm_kubernetes_cluster"]["this"]
    assert hcl_string(aks["automatic_upgrade_channel"]) == "patch"
    assert hcl_string(aks["node_os_upgrade_channel"]) == "NodeImage"
    for window in WINDOWS:
        (block,) = aks[window]
        assert hcl_string(block["frequency"]) == "Weekly" and block["interval"] == 1
        for field, attribute in [
            ("day_of_week", "day_of_week"),
            ("start_time", "start_time"),
            ("utc_offset", "utc_offset"),
            ("duration", "duration_hours"),
        ]:
            assert block[field] == f"${{var.{window}.{attribute}}}"
    defaults = evaluate({w: f"var.{w}" for w in WINDOWS})
    for value in defaults.values():
        assert 4 <= value["duration_hours"] <= 24 and re.fullmatch(r"\d\d:\d\d", value["start_time"])
    assert defaults[WINDOWS[0]]["day_of_week"] != defaults[WINDOWS[1]]["day_of_week"]  # not both at once


@pytest.mark.parametrize(
    "bad",
    [{"day_of_week": "Funday"}, {"start_time": "25:00"}, {"utc_offset": "UTC"}, {"duration_hours": 2}],
    ids=["day", "time", "offset", "too-short"],
)
def test_maintenance_window_variables_refuse_what_aks_refuses(bad):
    window = {"day_of_week": "Sunday", "start_time": "02:00", "utc_offset": "+00:00", "duration_hours": 4, **bad}
    error = evaluation_error({"w": "var.maintenance_window_node_os"}, {"maintenance_window_node_os": window})
    assert "duration_hours 4-24" in error


def test_web_app_routing_provides_the_ingress_class_the_example_uses(tf):
    """azurerm 4.x `web_app_routing { dns_zone_ids = [...] }` enables the app routing add-on, whose NGINX serves the
    IngressClass webapprouting.kubernetes.azure.com (learn.microsoft.com/azure/aks/app-routing)."""
    block = dynamic_block(tf["resource"]["azurerm_kubernetes_cluster"]["this"], "web_app_routing")
    assert block["for_each"] == "${var.enable_web_app_routing ? [1] : []}"
    assert block["content"][0]["dns_zone_ids"] == "${var.web_app_routing_dns_zone_ids}"
    assert evaluate({"on": "var.enable_web_app_routing", "zones": "var.web_app_routing_dns_zone_ids"}) == {
        "on": True,
        "zones": [],
    }


GCS_RESOURCES = ("azurerm_redis_cache", "azurerm_private_endpoint", "azurerm_private_dns_zone", "azurerm_subnet")


def test_gcs_redis_is_optional_tls_only_and_private(tf):
    res = tf["resource"]
    redis = res["azurerm_redis_cache"]["gcs"]
    assert hcl_string(redis["sku_name"]) == "Standard"  # a replica and an SLA: Ray asks for an HA Redis
    assert redis["non_ssl_port_enabled"] is False and hcl_string(redis["minimum_tls_version"]) == "1.2"
    assert redis["public_network_access_enabled"] is False
    assert hcl_string(redis["redis_configuration"][0]["maxmemory_policy"]) == "noeviction"
    endpoint = res["azurerm_private_endpoint"]["redis"]
    connection = endpoint["private_service_connection"][0]
    assert connection["subresource_names"] == ['"redisCache"'] and "azurerm_redis_cache.gcs[0].id" in str(connection)
    assert hcl_string(res["azurerm_private_dns_zone"]["redis"]["name"]) == "privatelink.redis.cache.windows.net"
    counts = {f"{t}.{n}": hcl_expression(res[t][n]["count"]) for t in GCS_RESOURCES for n in res[t] if n != "nodes"}
    assert evaluate(counts) == dict.fromkeys(counts, 0)  # off by default: nothing created, nothing billed
    assert evaluate(counts, {"gcs_fault_tolerance_redis": True}) == dict.fromkeys(counts, 1)
    assert tf["locals"]["redis_address"].startswith('${var.gcs_fault_tolerance_redis ? "rediss://${azurerm_redis')
    assert ":${azurerm_redis_cache.gcs[0].ssl_port}" in tf["locals"]["redis_address"]


def test_gcs_redis_reaches_the_chart_as_head_gcs_fault_tolerance(tf):
    """The chart's values (head.gcsFaultTolerance.enabled / redisAddress / redisPasswordSecret.name / .key) as
    Terraform computes them, off and on; the output names the same Secret and key and the command creating it."""
    off = evaluate({"v": "local.phifleet_values.head.gcsFaultTolerance"})["v"]
    assert off["enabled"] is False and off["redisPasswordSecret"]["name"] == ""
    on = evaluate({"v": "local.phifleet_values.head.gcsFaultTolerance"}, {"gcs_fault_tolerance_redis": True})["v"]
    assert on == {
        "enabled": True,
        "redisAddress": "rediss://phifleet-gcs-stub01.redis.cache.windows.net:6380",
        "redisPasswordSecret": {"name": "phifleet-redis", "key": "password"},
    }
    output = tf["output"]["gcs_fault_tolerance"]["value"]
    assert 'redisPasswordSecret = {name = var.redis_password_secret_name, key = "password"}' in output
    assert "create secret generic ${var.redis_password_secret_name} --from-literal=password=" in output


def test_checkov_terraform_has_no_failed_checks():
    assert_clean(checkov_results("terraform", AZURE), min_passed=30)


def test_checkov_terraform_has_no_failed_checks_with_every_option_on(tmp_path):
    """checkov evaluates `count`: resources a variable turns on (the Redis, its private endpoint) are only checked
    with that variable set."""
    var_file = tmp_path / "all.tfvars"
    var_file.write_text('gcs_fault_tolerance_redis = true\ngpu_spot = true\ningress_host = "phi4.example.com"\n')
    results = checkov_results("terraform", AZURE, "--var-file", str(var_file))
    assert_clean(results, min_passed=30)
    redis = {c["check_id"] for c in results["passed_checks"] if c["resource"] == "azurerm_redis_cache.gcs[0]"}
    assert {"CKV_AZURE_89", "CKV_AZURE_91", "CKV_AZURE_148"} <= redis  # no public access, TLS only, TLS 1.2


def test_terraform_fmt():
    terraform = shutil.which("terraform") or shutil.which("tofu")
    if terraform is None:
        pytest.skip("no terraform/tofu binary on PATH (none is installable from PyPI, npm or Debian): fmt unchecked")
    proc = subprocess.run([terraform, "fmt", "-check", "-recursive", str(AZURE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
