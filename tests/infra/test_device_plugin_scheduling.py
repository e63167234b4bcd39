"""The NVIDIA device plugin infra/azure installs lands on every GPU node and nowhere else.

The chart (nvidia-device-plugin 0.17.1, vendored in tests/infra/vendor with its provenance) is rendered by the real
helm binary with the values Terraform computes for it (helm.tf's `values` expression evaluated by `terraform
console`), and its DaemonSet's pod spec is checked against the nodes of each pool — labels and taints as main.tf
sets them plus those AKS adds (tests/infra/aks.py) — with Kubernetes' scheduling rules (tests/infra/scheduling.py).
Without a device plugin no node advertises nvidia.com/gpu and every GPU worker stays Pending.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.aks import aks_nodes
from tests.infra.scheduling import schedulable, why_not
from tests.infra.terraform import evaluate, hcl_expression, hcl_string

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

CHART = Path(__file__).resolve().parent / "vendor" / "nvidia-device-plugin-0.17.1.tgz"
PLUGIN = "nvidia-device-plugin-ctr"  # the plugin container (templates/daemonset-device-plugin.yml)


def device_plugin_pod(helm: str, values_yaml: str | None, tmp_path: Path) -> dict[str, Any]:
    args = [helm, "template", "nvidia-device-plugin", str(CHART), "-n", "nvidia-device-plugin"]
    if values_yaml is not None:
        (tmp_path / "values.yaml").write_text(values_yaml)
        args += ["-f", str(tmp_path / "values.yaml")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # The plugin's DaemonSet (the chart also renders an MPS control daemon, which only runs on nodes labelled
    # nvidia.com/mps.capable=true: MPS is not configured here).
    (daemonset,) = [
        d
        for d in yaml.safe_load_all(proc.stdout)
        if d and d["kind"] == "DaemonSet" and d["spec"]["template"]["spec"]["containers"][0]["name"] == PLUGIN
    ]
    return daemonset["spec"]["template"]["spec"]


def terraform_values(tf: dict[str, Any], variables: dict[str, Any]) -> str:
    release = tf["resource"]["helm_release"]["nvidia_device_plugin"]
    assert hcl_string(release["chart"]) == "nvidia-device-plugin" and hcl_string(release["version"]) == "0.17.1"
    (values,) = release["values"]
    return evaluate({"values": hcl_expression(values)}, variables)["values"]


def test_the_vendored_chart_is_the_version_helm_tf_installs(helm):
    proc = subprocess.run([helm, "show", "chart", str(CHART)], capture_output=True, text=True, check=True)
    chart = yaml.safe_load(proc.stdout)
    assert (chart["name"], chart["version"]) == ("nvidia-device-plugin", "0.17.1")


def test_chart_defaults_never_schedule_on_aks_gpu_nodes(helm, tf, tmp_path):
    """The finding: the chart's default affinity wants node-feature-discovery labels no AKS node carries."""
    pod = device_plugin_pod(helm, None, tmp_path)
    gpu = aks_nodes(tf)["gpu"]
    assert not schedulable(pod, gpu)
    assert "feature.node.kubernetes.io/pci-10de.present" in yaml.safe_dump(pod["affinity"])


@pytest.mark.parametrize("gpu_spot", [False, True], ids=["regular", "spot"])
def test_device_plugin_schedules_on_every_gpu_node_and_nowhere_else(helm, tf, tmp_path, gpu_spot):
    variables = {"gpu_spot": gpu_spot}
    pod = device_plugin_pod(helm, terraform_values(tf, variables), tmp_path)
    nodes = aks_nodes(tf, variables)
    gpu = nodes.pop("gpu")
    assert schedulable(pod, gpu), why_not(pod, gpu)
    assert gpu.taints, "the GPU pool is tainted: the plugin must tolerate it, as checked above"
    for other in nodes.values():  # the system and CPU pools have no GPU: no plugin pod there
        assert not schedulable(pod, other), f"device plugin would run on the {other.pool} pool"
    # Helm replaced the chart's NFD terms instead of adding ours beside them.
    assert "feature.node.kubernetes.io" not in yaml.safe_dump(pod["affinity"])


def test_the_plugin_is_installed_by_default_and_before_phifleet(tf):
    """The release's GPU workers ask for nvidia.com/gpu, which only this plugin advertises: it comes first."""
    release = tf["resource"]["helm_release"]["phifleet"]
    assert "helm_release.nvidia_device_plugin" in str(release["depends_on"])
    count = hcl_expression(tf["resource"]["helm_release"]["nvidia_device_plugin"]["count"])
    assert evaluate({"on": count.replace("var.install_phifleet", "true")})["on"] == 1
