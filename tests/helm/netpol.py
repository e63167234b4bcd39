"""Which ingress flows rendered NetworkPolicies admit: Kubernetes' semantics for the parts the chart renders.

No API server or CNI runs here, so the policies are evaluated as the NetworkPolicy spec defines them
(kubernetes.io/docs/concepts/services-networking/network-policies): a pod selected by any policy with Ingress
accepts a connection only if some rule of such a policy admits it — every listed port, or all ports when none are
listed; any listed peer, or every source when `from` is absent. A peer with `podSelector` alone means pods of the
policy's namespace; with `namespaceSelector` alone, every pod of the matching namespaces; with both, the matching
pods in the matching namespaces. Namespaces carry the `kubernetes.io/metadata.name` label Kubernetes sets.
`matchExpressions` and `ipBlock` peers are not rendered by the chart; the evaluator refuses them rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    if "matchExpressions" in selector:
        raise NotImplementedError("matchExpressions: not rendered by the chart, not evaluated here")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_admits(peer: dict[str, Any], policy_namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        raise NotImplementedError("ipBlock peers: not rendered by the chart, not evaluated here")
    namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is None:
        return source.namespace == policy_namespace and _selects(pods, source.labels)
    in_namespace = _selects(namespaces, namespace_labels)
    return in_namespace and (pods is None or _selects(pods, source.labels))


def admits(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    """Whether ``source`` may open a TCP connection to ``target`` on ``port`` under these policies."""
    governing = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], target.labels)
    ]
    if not governing:
        return True  # no policy selects the pod: Kubernetes admits everything
    for policy in governing:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            tcp = [p.get("port") for p in ports or [] if p.get("protocol", "TCP") == "TCP"]
            if ports is not None and port not in tcp:
                continue
            peers = rule.get("from")
            if peers is None or any(_peer_admits(peer, policy["metadata"]["namespace"], source) for peer in peers):
                return True
    return False
