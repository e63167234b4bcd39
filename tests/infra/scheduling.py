"""Whether a pod may be scheduled on a node: Kubernetes' own rules for the parts infra/azure and the charts set.

No scheduler runs here, so the two filters that decide it for these pods are evaluated as Kubernetes defines them:

- node selection (k8s.io/component-helpers/scheduling/corev1/nodeaffinity, `GetRequiredNodeAffinity(pod).Match`):
  every `nodeSelector` pair must be a node label, and, when `requiredDuringSchedulingIgnoredDuringExecution` is set,
  at least one of its `nodeSelectorTerms` must match — a term matches when all its `matchExpressions` do, and a term
  with no expressions matches nothing. Operators: In, NotIn (true when the label is absent), Exists, DoesNotExist,
  Gt and Lt (the label parsed as an integer).
- taints (the scheduler's TaintToleration filter, `v1helper.FindMatchingUntoleratedTaint` over NoSchedule and
  NoExecute taints; PreferNoSchedule never blocks): every such taint must be tolerated, where a toleration tolerates
  a taint (k8s.io/api/core/v1 `Toleration.ToleratesTaint`) when its effect is empty or equal, its key is empty or
  equal, and its operator is Exists, or Equal (the default) with an equal value.

Resources, ports and pod (anti-)affinity are not evaluated: none of the checked pods uses them to pick a pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> Taint:
        """AKS's `key=value:Effect` form (azurerm `node_taints`)."""
        key_value, effect = text.rsplit(":", 1)
        key, _, value = key_value.partition("=")
        return cls(key, value, effect)


@dataclass(frozen=True)
class Node:
    pool: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()


def _expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            label, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return label > bound if op == "Gt" else label < bound
    raise ValueError(f"unknown node selector operator {op!r}")


def node_affinity_matches(pod_spec: dict[str, Any], node: Node) -> bool:
    if not all(node.labels.get(k) == str(v) for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is None:
        return True
    for term in required.get("nodeSelectorTerms") or []:
        if "matchFields" in term:
            raise NotImplementedError("matchFields: not rendered here, not evaluated")
        expressions = term.get("matchExpressions") or []
        if expressions and all(_expression_matches(e, node.labels) for e in expressions):
            return True
    return False


def tolerates(toleration: dict[str, Any], taint: Taint) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.effect:
        return False
    if toleration.get("key") and toleration["key"] != taint.key:
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return str(toleration.get("value", "")) == taint.value
    raise ValueError(f"unknown toleration operator {operator!r}")


def untolerated_taints(pod_spec: dict[str, Any], node: Node) -> list[Taint]:
    tolerations = pod_spec.get("tolerations") or []
    return [
        t
        for t in node.taints
        if t.effect in ("NoSchedule", "NoExecute") and not any(tolerates(tol, t) for tol in tolerations)
    ]


def schedulable(pod_spec: dict[str, Any], node: Node) -> bool:
    """Whether the scheduler's node-affinity and taint filters both pass ``pod_spec`` onto ``node``."""
    return node_affinity_matches(pod_spec, node) and not untolerated_taints(pod_spec, node)


def why_not(pod_spec: dict[str, Any], node: Node) -> str:
    if not node_affinity_matches(pod_spec, node):
        return f"node selector/affinity does not match the {node.pool} pool's labels {node.labels}"
    return f"the {node.pool} pool's taints {untolerated_taints(pod_spec, node)} are not tolerated"
