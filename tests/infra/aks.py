"""The nodes infra/azure's AKS cluster will have: each pool's labels and taints as main.tf sets them (evaluated by
Terraform, tests/infra/terraform.py), plus the ones AKS itself adds.

What AKS adds, from its documentation:
- every node: `kubernetes.azure.com/agentpool=<pool name>` and `kubernetes.azure.com/mode=<system|user>` (reserved
  labels, learn.microsoft.com/azure/aks/use-labels#reserved-system-labels);
- NVIDIA GPU sizes: `kubernetes.azure.com/accelerator=nvidia` (same table; the cluster autoscaler's Azure provider
  keys GPU nodes on it, kubernetes/autoscaler#7235);
- Spot pools: label and taint `kubernetes.azure.com/scalesetpriority=spot(:NoSchedule)`
  (learn.microsoft.com/azure/aks/spot-node-pool) — main.tf declares both, so AKS's and ours coincide;
- `only_critical_addons_enabled`: the taint `CriticalAddonsOnly=true:NoSchedule` (azurerm docs,
  kubernetes_cluster `default_node_pool.only_critical_addons_enabled`).
"""

from __future__ import annotations

from typing import Any

from tests.infra.scheduling import Node, Taint
from tests.infra.terraform import evaluate, hcl_expression, hcl_string


def _expr(value: Any) -> str:
    """An attribute's expression text: '${...}' unwrapped, a literal re-encoded."""
    if isinstance(value, str) and value.startswith("${"):
        return hcl_expression(value)
    if isinstance(value, str):
        return f'"{hcl_string(value)}"'
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def aks_nodes(tf: dict[str, Any], variables: dict[str, Any] | None = None) -> dict[str, Node]:
    """{pool name: Node} for the system pool and every azurerm_kubernetes_cluster_node_pool."""
    aks = tf["resource"]["azurerm_kubernetes_cluster"]["this"]
    system = aks["default_node_pool"][0]
    pools = {hcl_string(system["name"]): ("system", system)}
    for pool in tf["resource"]["azurerm_kubernetes_cluster_node_pool"].values():
        pools[hcl_string(pool["name"])] = (hcl_string(pool.get("mode", '"User"')).lower(), pool)
    expressions = {}
    for name, (_, pool) in pools.items():
        expressions[f"{name}.labels"] = _expr(pool.get("node_labels", "${{}}"))
        expressions[f"{name}.taints"] = _expr(pool.get("node_taints", "${[]}"))
        expressions[f"{name}.vm_size"] = _expr(pool["vm_size"])
        expressions[f"{name}.priority"] = _expr(pool.get("priority", '"Regular"'))
    values = evaluate(expressions, variables)
    nodes = {}
    for name, (mode, pool) in pools.items():
        labels = dict(values[f"{name}.labels"] or {})
        labels.update({"kubernetes.azure.com/agentpool": name, "kubernetes.azure.com/mode": mode})
        taints = [Taint.parse(t) for t in values[f"{name}.taints"] or []]
        if values[f"{name}.vm_size"].startswith("Standard_NC"):  # NVIDIA H100/A100 sizes (variables.tf)
            labels["kubernetes.azure.com/accelerator"] = "nvidia"
        if values[f"{name}.priority"] == "Spot":
            labels["kubernetes.azure.com/scalesetpriority"] = "spot"
            spot = Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule")
            taints += [] if spot in taints else [spot]
        if pool.get("only_critical_addons_enabled") is True:
            taints.append(Taint("CriticalAddonsOnly", "true", "NoSchedule"))
        nodes[name] = Node(name, labels, tuple(taints))
    return nodes
