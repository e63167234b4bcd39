"""Every name helm/phifleet's AKS example refers to exists on the cluster infra/azure creates, or is a prerequisite
that infra/azure/README.md creates with a command.

The chart is rendered by the real helm binary the ways the README installs it: `values-aks-h100.yaml` alone (as
`helm install -f values-aks-h100.yaml`), and with the values Terraform adds (release_values.tf evaluated by
`terraform console` for several variable settings, and helm.tf's `set` entries). Each rendered object is then read
for the names it needs from outside the chart — Secrets (and their keys and types), the IngressClass, the
ServiceMonitor's API group, the StorageClass, the node labels and taints its pods select and tolerate, the
ServiceAccount the workload identity is federated to, the KubeRay operator's namespace, the model's storage
container — and each is checked against what the module creates (the parsed HCL, evaluated where it matters)
or against a `kubectl create secret` command in the README's quickstart.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helm.conftest import CHART, by_kind, render, strict
from tests.helm.netpol import Pod, admits
from tests.infra.aks import aks_nodes
from tests.infra.scheduling import schedulable, why_not
from tests.infra.terraform import README, STUB_LOCALS, evaluate, hcl_expression, hcl_string

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

EXAMPLE = CHART / "values-aks-h100.yaml"
VENDOR = Path(__file__).resolve().parent / "vendor"
RELEASE = "phifleet"  # helm.tf's release name; tests/helm/conftest.render renders into namespace "phifleet"
NAMESPACE = "phifleet"
# Resource attributes helm.tf passes with `set`, stubbed (what Terraform would only know after apply).
STUB_SETS = {
    "workloadIdentity.clientId": "11111111-2222-3333-4444-555555555555",
    "image.repository": "phifleetstub.azurecr.io/phifleet",
}
# IngressClasses on the cluster, and the azurerm_kubernetes_cluster dynamic block that brings each: the application
# routing add-on creates webapprouting.kubernetes.azure.com (learn.microsoft.com/azure/aks/app-routing).
INGRESS_CLASSES = {"webapprouting.kubernetes.azure.com": ("web_app_routing", "enable_web_app_routing")}
# ServiceMonitor API groups whose CRD the cluster has: AKS managed Prometheus (the `monitor_metrics` add-on) installs
# servicemonitors.azmonitoring.coreos.com and reads only that group
# (learn.microsoft.com/azure/azure-monitor/containers/prometheus-metrics-scrape-crd).
MONITOR_GROUPS = {"azmonitoring.coreos.com": ("monitor_metrics", "enable_managed_prometheus")}
# The managed Prometheus add-on's scrapers (ama-metrics) run in kube-system
# (learn.microsoft.com/azure/azure-monitor/containers/prometheus-metrics-troubleshoot).
MANAGED_PROMETHEUS_NAMESPACE = "kube-system"
# StorageClasses AKS creates in every cluster (learn.microsoft.com/azure/aks/concepts-storage#storage-classes);
# the azurefile ones exist while the Azure Files CSI driver is on (azurerm `storage_profile.file_driver_enabled`,
# default true). Only Azure Files serves ReadWriteMany among them.
AKS_STORAGE_CLASSES = {
    "default": "disk",
    "managed-csi": "disk",
    "managed-csi-premium": "disk",
    "azurefile-csi": "file",
    "azurefile-csi-premium": "file",
}
# The NVIDIA device plugin advertises this resource (tests/infra/test_device_plugin_scheduling.py: it runs there).
GPU_RESOURCE = "nvidia.com/gpu"

SCENARIOS = {
    # values-aks-h100.yaml alone: `helm install -f values-aks-h100.yaml` (root README, the example's header)
    "example": None,
    # terraform apply with the defaults, and with every option this module has that changes the release
    "terraform": {},
    "terraform-spot-redis-ingress": {
        "gpu_spot": True,
        "gcs_fault_tolerance_redis": True,
        "ingress_host": "phi4.example.com",
    },
    "terraform-no-prometheus-no-app-routing": {
        "enable_managed_prometheus": False,
        "enable_web_app_routing": False,
        "ingress_host": "phi4.example.com",
    },
}


# --- rendering ----------------------------------------------------------------------------------------------------
def render_scenario(helm: str, tf: dict[str, Any], variables: dict[str, Any] | None, tmp_path: Path) -> list[dict]:
    if variables is None:
        return render(helm, "-f", str(EXAMPLE), release=RELEASE)
    release = tf["resource"]["helm_release"]["phifleet"]
    assert hcl_string(release["name"]) == RELEASE and hcl_string(release["namespace"]) == "${var.namespace}"
    assert release["values"][0] == '${file("${local.chart}/values-aks-h100.yaml")}'
    computed = evaluate(
        {
            "v": hcl_expression(release["values"][1]).replace("yamlencode", "yamldecode(yamlencode") + ")",
            "ns": "var.namespace",
        },
        variables,
    )
    assert computed["ns"] == NAMESPACE
    (tmp_path / "terraform-values.yaml").write_text(yaml.safe_dump(computed["v"]))
    sets = []
    for entry in release["set"]:
        name, value = hcl_string(entry["name"]), entry["value"]
        if name in STUB_SETS:
            sets += ["--set", f"{name}={STUB_SETS[name]}"]
        else:
            assert value.startswith("${var."), f"set {name}: stub it in STUB_SETS"
            sets += ["--set", f"{name}={evaluate({'x': hcl_expression(value)}, variables)['x']}"]
    return render(helm, "-f", str(EXAMPLE), "-f", str(tmp_path / "terraform-values.yaml"), *sets, release=RELEASE)


@pytest.fixture(scope="module", params=list(SCENARIOS), ids=list(SCENARIOS))
def scenario(request, helm, tf, tmp_path_factory) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    variables = SCENARIOS[request.param]
    return variables, render_scenario(helm, tf, variables, tmp_path_factory.mktemp(request.param))


def walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, i))


def ray_pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        spec = d["spec"].get("rayClusterConfig") or d["spec"].get("rayClusterSpec") if "spec" in d else None
        if d["kind"] in ("RayService", "RayJob") and spec:
            yield "head", spec["headGroupSpec"]["template"]
            for group in spec.get("workerGroupSpecs", []):
                yield group["groupName"], group["template"]


# --- the README's prerequisites -----------------------------------------------------------------------------------
def readme_secret_commands() -> dict[str, dict[str, Any]]:
    """{name: {namespace, type, keys}} of every `kubectl -n NS create secret TYPE NAME ...` in the README."""
    text = README.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        m = re.search(r"kubectl -n (\S+) create secret (generic|tls) ([a-z0-9.-]+)(.*)", line)
        if not m:
            continue
        namespace, kind, name, rest = m.groups()
        keys = set(re.findall(r"--from-(?:literal|file)=([A-Za-z0-9._-]+)=", rest))
        if kind == "tls":
            assert re.search(r"--cert=\S+", rest) and re.search(r"--key=\S+", rest), line
            keys = {"tls.crt", "tls.key"}
        found[name] = {"namespace": namespace, "type": kind, "keys": keys}
    return found


def test_the_readme_creates_every_secret_in_the_release_namespace(tf):
    commands = readme_secret_commands()
    assert {"phifleet-api-keys", "phi4-tls", "phifleet-redis"} <= set(commands)
    assert {c["namespace"] for c in commands.values()} == {evaluate({"ns": "var.namespace"})["ns"]}
    redis = evaluate({"name": "var.redis_password_secret_name", "tls": "var.ingress_tls_secret_name"})
    assert commands[redis["name"]]["keys"] == {"password"} and commands[redis["tls"]]["type"] == "tls"


# --- the checks ---------------------------------------------------------------------------------------------------
def secret_references(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{name: {type, keys}} of every Secret an object refers to by name."""
    refs: dict[str, dict[str, Any]] = {}

    def need(name: str, kind: str = "generic", key: str | None = None) -> None:
        ref = refs.setdefault(name, {"type": kind, "keys": set()})
        ref["type"] = "tls" if kind == "tls" else ref["type"]
        if key:
            ref["keys"].add(key)

    for doc in docs:
        if doc["kind"] == "Ingress":
            for tls in doc["spec"].get("tls") or []:
                need(tls["secretName"], "tls")
        for path, node in walk(doc):
            if isinstance(node, dict) and "secretKeyRef" in node:
                need(node["secretKeyRef"]["name"], key=node["secretKeyRef"]["key"])
            if path and path[-1] == "secret" and isinstance(node, dict) and "secretName" in node:
                for item in node.get("items") or []:
                    need(node["secretName"], key=item["key"])
                need(node["secretName"])
    # The API keys volume: the app reads the file named after the Secret's key (serveConfigV2 auth.api_keys_file).
    for svc in by_kind(docs, "RayService"):
        auth = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"].get("auth") or {}
        if auth.get("api_keys_file"):
            for _, template in ray_pod_templates([svc]):
                for volume in template["spec"].get("volumes", []):
                    mounts = [m for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])]
                    mount = next((m for m in mounts if m["name"] == volume["name"]), None)
                    if "secret" in volume and mount and auth["api_keys_file"].startswith(mount["mountPath"] + "/"):
                        need(volume["secret"]["secretName"], key=auth["api_keys_file"].rsplit("/", 1)[1])
    return refs


def test_every_secret_is_created_by_the_chart_or_by_the_readme(scenario):
    _, docs = scenario
    created_by_chart = {d["metadata"]["name"] for d in by_kind(docs, "Secret")}
    commands = readme_secret_commands()
    refs = secret_references(docs)
    assert refs, "the example refers to Secrets (API keys at least): the walk found none"
    for name, ref in refs.items():
        if name in created_by_chart:
            continue
        assert name in commands, f"Secret {name} is neither rendered by the chart nor created in the README"
        command = commands[name]
        assert command["namespace"] == NAMESPACE, f"{name} is created in {command['namespace']}"
        assert command["type"] == ref["type"], f"{name} must be a {ref['type']} Secret"
        assert ref["keys"] <= command["keys"], f"{name} needs keys {ref['keys']}, the README gives {command['keys']}"


def _block_enabled(tf: dict[str, Any], block: str, variable: str, variables: dict[str, Any] | None) -> bool:
    aks = tf["resource"]["azurerm_kubernetes_cluster"]["this"]
    (dynamic,) = [b[f'"{block}"'] for b in aks.get("dynamic", []) if f'"{block}"' in b]
    assert dynamic["for_each"] == f"${{var.{variable} ? [1] : []}}"
    return evaluate({"on": f"var.{variable}"}, variables or {})["on"]


def test_ingress_classes_are_the_cluster_add_ons(scenario, tf):
    variables, docs = scenario
    ingresses = by_kind(docs, "Ingress")
    for ingress in ingresses:
        name = ingress["spec"].get("ingressClassName")
        assert name in INGRESS_CLASSES, f"IngressClass {name} is not created by infra/azure"
        assert _block_enabled(tf, *INGRESS_CLASSES[name], variables), f"{name}'s add-on is off"
    if variables is not None and not variables.get("ingress_host"):
        assert not ingresses, "no ingress_host: Terraform renders no Ingress (the example's host is a placeholder)"
    if variables == {"ingress_host": "phi4.example.com"} or variables == SCENARIOS["terraform-spot-redis-ingress"]:
        (ingress,) = ingresses
        assert ingress["spec"]["rules"][0]["host"] == variables["ingress_host"]


def test_service_monitors_use_the_group_managed_prometheus_reads(scenario, tf):
    variables, docs = scenario
    crd = yaml.safe_load((VENDOR / "ama-metrics-servicemonitor-crd.yaml").read_text())
    schema = strict(copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}
    monitors = by_kind(docs, "ServiceMonitor")
    for monitor in monitors:
        group, version = monitor["apiVersion"].split("/")
        assert group in MONITOR_GROUPS, f"ServiceMonitor group {group}: no such CRD on the cluster"
        assert (group, version) == (crd["spec"]["group"], crd["spec"]["versions"][0]["name"])
        assert _block_enabled(tf, *MONITOR_GROUPS[group], variables)
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(monitor), key=str)
        assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        # The limits Microsoft's templates set and its docs ask for ("so that they are not dropped").
        limits = {k: monitor["spec"].get(k) for k in ("labelLimit", "labelNameLengthLimit", "labelValueLengthLimit")}
        assert limits == {"labelLimit": 63, "labelNameLengthLimit": 511, "labelValueLengthLimit": 1023}
        # ...and the add-on's scrapers may reach the metrics port through the release's NetworkPolicy.
        (_, head), *_ = ray_pod_templates(docs)
        target = Pod(NAMESPACE, head["metadata"]["labels"])
        assert admits(by_kind(docs, "NetworkPolicy"), Pod(MANAGED_PROMETHEUS_NAMESPACE, {}), target, 8080)
    if variables is not None:
        on = evaluate({"on": "var.enable_managed_prometheus"}, variables)["on"]
        assert bool(monitors) == on, "a ServiceMonitor exactly when managed Prometheus (its CRD) is on"
    else:
        assert monitors, "the example enables its ServiceMonitor"


def test_storage_classes_are_built_into_aks(scenario, tf):
    _, docs = scenario
    aks = tf["resource"]["azurerm_kubernetes_cluster"]["this"]
    file_driver = (aks.get("storage_profile") or [{}])[0].get("file_driver_enabled", True)
    for pvc in by_kind(docs, "PersistentVolumeClaim"):
        name = pvc["spec"].get("storageClassName")
        assert name in AKS_STORAGE_CLASSES, f"StorageClass {name} is not one AKS creates"
        if AKS_STORAGE_CLASSES[name] == "file":
            assert file_driver is not False, "the Azure Files CSI driver is off: no azurefile classes"
        if "ReadWriteMany" in pvc["spec"]["accessModes"]:
            assert AKS_STORAGE_CLASSES[name] == "file", f"{name} cannot serve ReadWriteMany"


def test_pods_land_on_the_pools_they_are_meant_for(scenario, tf):
    variables, docs = scenario
    nodes = aks_nodes(tf, variables or {})
    templates = list(ray_pod_templates(docs))
    assert {name for name, _ in templates} >= {"head", "gpu"}
    for name, template in templates:
        spec = template["spec"]
        gpus = [c["resources"].get("limits", {}).get(GPU_RESOURCE) for c in spec["containers"]]
        fits = [n.pool for n in nodes.values() if schedulable(spec, n)]
        if any(gpus):
            assert fits == ["gpu"], fits or f"{name} (GPUs): {why_not(spec, nodes['gpu'])}"
        elif name == "head":
            assert fits == ["cpu"], fits or why_not(spec, nodes["cpu"])
        else:
            assert fits, f"{name} fits no pool"
        resources = {k for c in spec["containers"] for k in c["resources"].get("limits", {})}
        assert resources <= {"cpu", "memory", GPU_RESOURCE}, f"{name} asks for {resources}: nothing advertises it"
    for pod in by_kind(docs, "Pod"):  # the helm test pod
        assert any(schedulable(pod["spec"], n) for n in nodes.values()), "the helm test pod fits no pool"


def test_the_service_account_is_the_one_the_identity_is_federated_to(scenario, tf):
    variables, docs = scenario
    cred = tf["resource"]["azurerm_federated_identity_credential"]["phifleet"]
    subject = evaluate({"s": cred["subject"]}, variables or {})["s"]
    (sa,) = by_kind(docs, "ServiceAccount")
    assert subject == f"system:serviceaccount:{NAMESPACE}:{sa['metadata']['name']}"
    client_id = sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
    if variables is None:  # the example's placeholder; every path the README documents replaces it
        assert set(client_id) <= {"0", "-"}
        output = tf["output"]["phifleet_values"]["value"]
        assert "clientId = azurerm_user_assigned_identity.phifleet.client_id" in output
        assert "terraform output -raw phifleet_values" in README.read_text()
    else:
        assert client_id == STUB_SETS["workloadIdentity.clientId"]
    for name, template in ray_pod_templates(docs):
        if template["metadata"]["labels"].get("azure.workload.identity/use") == "true":
            assert template["spec"]["serviceAccountName"] == sa["metadata"]["name"], name


def test_the_kuberay_operator_is_where_the_network_policy_admits_it(scenario, tf):
    _, docs = scenario
    operator = tf["resource"]["helm_release"]["kuberay_operator"]
    namespace, chart = hcl_string(operator["namespace"]), hcl_string(operator["chart"])
    assert "values" not in operator and "set" not in operator  # no nameOverride: its pods are labelled by the chart
    (policy,) = by_kind(docs, "NetworkPolicy")
    (_, head), *_ = ray_pod_templates(docs)
    source = Pod(namespace, {"app.kubernetes.io/name": chart})
    assert admits([policy], source, Pod(NAMESPACE, head["metadata"]["labels"]), 8265)


def test_the_model_comes_from_the_storage_account_and_the_readme_uploads_it_there(scenario, tf):
    variables, docs = scenario
    containers = evaluate({"c": hcl_expression(tf["resource"]["azurerm_storage_container"]["data"]["for_each"])})["c"]
    sources = set()
    for _, template in ray_pod_templates(docs):
        for c in template["spec"].get("initContainers", []):
            sources |= {e["value"] for e in c.get("env", []) if e["name"] == "PHIFLEET_WEIGHTS_SOURCE"}
    (source,) = sources
    m = re.fullmatch(r"abfs://([a-z0-9-]+)@([a-z0-9]+)\.dfs\.core\.windows\.net/(.+)", source)
    assert m, source
    container, account, path = m.groups()
    assert container in containers
    if variables is not None:
        assert account == STUB_LOCALS["storage_account_name"]  # Terraform's account, not the example's placeholder
    upload = re.search(r"upload-batch .*?-d (\S+) --destination-path (\S+)", README.read_text().replace("\\\n", " "))
    assert upload and upload.groups() == (container, path), "the README uploads the weights where the pods fetch"


def test_the_grafana_dashboard_is_documented_for_azure(scenario):
    _, docs = scenario
    if any(c["metadata"]["name"].endswith("-dashboard") for c in by_kind(docs, "ConfigMap")):
        assert "helm/phifleet/dashboards/phifleet.json" in README.read_text()


def test_readme_shell_steps_name_only_outputs_and_variables_that_exist(tf):
    """`terraform output -raw X`, `-var X=`, and tfvars names in the README are the module's."""
    text = README.read_text()
    outputs = set(re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", text))
    assert outputs and outputs <= set(tf["output"]), outputs - set(tf["output"])
    variables = set(re.findall(r"-var ([a-z_]+)=", text)) | set(re.findall(r"^#? *([a-z_]+) += ", text, re.M))
    assert variables and variables <= set(tf["variable"]), variables - set(tf["variable"])
