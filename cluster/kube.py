"""The operator's side of a cluster, through the kubernetes client: submit and follow a RayJob, report a release.

Objects come from the chart (cluster.helm.template), so a CLI-submitted job runs the same pods as an installed
release's — with the release's ServiceAccount, model claim and labels — and this module only creates, reads and
summarises them. Every API call goes through `Kube`, so a refusal becomes one line naming its cause (and, for a
403, the verb and resource the credentials lack) instead of a traceback.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from phifleet.cluster.chart_values import chart_values
from phifleet.cluster.helm import DEFAULT_CHART, template
from phifleet.jobs.config import JobConfig

GROUP, VERSION = "ray.io", "v1"
KUBERAY_INSTALL = "helm install kuberay-operator kuberay/kuberay-operator --version 1.7.0"
JOB_LABEL = "phifleet.io/job"  # on every object and pod of a CLI-submitted job: its NetworkPolicy selects by it
MANAGED_BY = "phifleet"  # app.kubernetes.io/managed-by of CLI-created objects (the chart says Helm)

# When `--wait` stops. KubeRay v1.7.0 ray-operator/apis/ray/v1/rayjob_types.go: `IsJobDeploymentTerminal` is
# Complete or Failed. rayjob_controller.go `checkBackoffLimitAndUpdateStatusIfNeeded` turns a Failed attempt into
# Retrying in the same status update while `status.failed < backoffLimit + 1`, and Retrying → New → Initializing
# brings up a new cluster; during that time `jobStatus` still says FAILED (Ray's terminal JobStatus of the last
# attempt), so jobStatus never ends the wait, only jobDeploymentStatus does. ValidationFailed is not terminal to
# KubeRay, but the controller never starts such a job until its spec changes, so waiting on it would be forever.
# Suspending/Suspended/Waiting/Initializing/Running/Retrying/New ("") are not final.
FINAL_DEPLOYMENT_STATES = frozenset({"Complete", "Failed", "ValidationFailed"})


class ClusterError(RuntimeError):
    """One line for the user: what failed and what to do about it."""


@dataclass(frozen=True)
class Resource:
    """An API resource the CLI calls; `display` is how RBAC names it (`rayjobs.ray.io`, `configmaps`)."""

    group: str
    plural: str
    kind: str
    method: str = ""  # the typed client's method suffix (`config_map`); "" for KubeRay's custom resources

    @property
    def display(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


RAYJOBS = Resource(GROUP, "rayjobs", "RayJob")
RAYSERVICES = Resource(GROUP, "rayservices", "RayService")
CONFIGMAPS = Resource("", "configmaps", "ConfigMap", "config_map")
SERVICES = Resource("", "services", "Service", "service")
SERVICEACCOUNTS = Resource("", "serviceaccounts", "ServiceAccount", "service_account")
CLAIMS = Resource("", "persistentvolumeclaims", "PersistentVolumeClaim", "persistent_volume_claim")
NETWORKPOLICIES = Resource("networking.k8s.io", "networkpolicies", "NetworkPolicy", "network_policy")


# --- errors ----------------------------------------------------------------------------------------------------
def _status(exc: ApiException) -> dict[str, Any]:
    """The Status object of a refusal; {} when the body is not one (the API server's plain `404 page not found`)."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


def api_error(exc: ApiException, verb: str, res: Resource, namespace: str, name: str | None = None) -> ClusterError:
    """The refusal of `verb res` as one line naming its cause."""
    status = _status(exc)
    message = str(status.get("message") or exc.reason or "").strip()
    where = f" in namespace {namespace}" if namespace else ""
    what = f"{res.kind} {namespace}/{name}" if name else f"{res.display}{where}"
    if exc.status == 401:
        return ClusterError(
            "the API server rejected the credentials (401 Unauthorized): they are missing or expired — refresh them "
            "(e.g. az aks get-credentials / kubelogin) or pick others with --kubeconfig/--context"
        )
    if exc.status == 403:
        rbac = re.search(r'User "([^"]*)" cannot ', message)
        if rbac:  # the authorizer's refusal: name the verb and resource the Role lacks
            return ClusterError(
                f'forbidden (403): user "{rbac[1]}" may not {verb} {res.display} in namespace {namespace}; '
                "grant it (the chart's submitter Role has exactly what phifleet cluster calls: "
                "--set submitter.rbac.create=true, README 'RBAC')"
            )
        return ClusterError(f"forbidden (403) to {verb} {what}: {message}")  # an admission webhook, a quota
    if exc.status == 404:
        details = status.get("details") or {}
        if details.get("kind") == "namespaces":
            return ClusterError(f"namespace {namespace} not found (404): create it or pick another with -n")
        if not status:  # the API server's 404 for a path nothing serves: the resource type is not installed
            hint = f": install the KubeRay operator v1.7 first ({KUBERAY_INSTALL})" if res.group == GROUP else ""
            return ClusterError(f"this cluster does not serve {res.display} (404 on its API){hint}")
        return ClusterError(f"{what} not found (404)")
    if exc.status == 409:
        return ClusterError(
            f"{what} already exists (409): a job's objects are named after it — pick another --name, or delete the "
            f"old one (kubectl -n {namespace} delete {res.plural} {name})"
        )
    reason = status.get("reason") or exc.reason or "error"
    return ClusterError(f"{verb} {what} failed ({exc.status} {reason}): {message}".rstrip(": "))


def _missing(exc: ClusterError) -> bool:
    """Whether a refusal says the named object does not exist (not its type, not its namespace)."""
    cause = exc.__cause__
    return (
        isinstance(cause, ApiException)
        and cause.status == 404
        and bool(_status(cause))
        and (_status(cause).get("details") or {}).get("kind") != "namespaces"
    )


class Kube:
    """The CLI's API calls, one method per verb: each refusal becomes a ClusterError line naming the verb and the
    resource (what the submitter Role in helm/phifleet/templates/rbac-submitter.yaml grants); objects come back as
    plain dicts."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.typed = {"": client.CoreV1Api(api), "networking.k8s.io": client.NetworkingV1Api(api)}

    def call(
        self, verb: str, res: Resource, namespace: str, name: str | None = None, body: Any = None, **kwargs: Any
    ) -> Any:
        """`verb` (get, list, create, patch, delete) on `res` through the typed or the custom-objects client."""
        target = None if verb == "create" else name  # a create names its object in the body
        if res.method:  # the typed clients take (name, namespace, body)
            fn = getattr(self.typed[res.group], f"{'read' if verb == 'get' else verb}_namespaced_{res.method}")
            args = [a for a in (target, namespace, body) if a is not None]
        else:  # the custom-objects client takes (group, version, namespace, plural, name, body)
            fn = getattr(self.custom, f"{verb}_namespaced_custom_object")
            args = [res.group, VERSION, namespace, res.plural, *(a for a in (target, body) if a is not None)]
        return self.run(verb, res, namespace, name, fn, *args, **kwargs)

    def run(
        self, verb: str, res: Resource, namespace: str, name: str | None, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        try:
            out = fn(*args, **kw)
        except ApiException as exc:
            raise api_error(exc, verb, res, namespace, name) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ClusterError(f"cannot reach the Kubernetes API server: {exc}") from exc
        return out if isinstance(out, dict) or out is None else self.api.sanitize_for_serialization(out)

    def get(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        return self.call("get", res, namespace, name)

    def list(self, res: Resource, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.call("list", res, namespace, label_selector=selector).get("items") or []

    def create(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return self.call("create", res, meta["namespace"], meta["name"], body)

    def patch(self, res: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): the same meaning for built-in and custom resources."""
        return self.call("patch", res, namespace, name, patch, _content_type="application/merge-patch+json")

    def delete(self, res: Resource, namespace: str, name: str) -> None:
        self.call("delete", res, namespace, name)


# --- credentials -----------------------------------------------------------------------------------------------
def api_client(
    kubeconfig: str | None = None, context: str | None = None, environ: dict[str, str] | None = None
) -> client.ApiClient:
    """kubectl's order: --kubeconfig, then $KUBECONFIG, then ~/.kube/config, and only then the pod's in-cluster
    credentials — so a kubeconfig given on purpose is never shadowed by the pod the CLI happens to run in."""
    env = os.environ if environ is None else environ
    path = kubeconfig or env.get("KUBECONFIG") or None
    default = Path("~/.kube/config").expanduser()
    if path is None and default.exists():
        path = str(default)
    if path is None:
        if context is not None:
            raise ClusterError(f"--context {context} needs a kubeconfig: none given, no $KUBECONFIG or {default}")
        configuration = client.Configuration()
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException as exc:
            raise ClusterError(
                f"no Kubernetes credentials: no --kubeconfig, no $KUBECONFIG, no {default}, and not in a pod ({exc})"
            ) from exc
        return client.ApiClient(configuration)
    try:
        return kube_config.new_client_from_config(config_file=path, context=context)
    except (kube_config.ConfigException, FileNotFoundError) as exc:
        raise ClusterError(f"no usable Kubernetes credentials in {path}: {exc}") from exc


def require_kuberay(kube: Kube) -> None:
    """Refuse before creating anything when the cluster has no ray.io/v1 (discovery, allowed to every user)."""
    discovery = Resource("", "apigroups", "API groups", "")
    groups = kube.run("discover", discovery, "", None, client.ApisApi(kube.api).get_api_versions).get("groups") or []
    versions = {v.get("version") for g in groups if g.get("name") == GROUP for v in g.get("versions") or []}
    if VERSION not in versions:
        raise ClusterError(
            f"this cluster does not serve ray.io/v1: install the KubeRay operator v1.7 first ({KUBERAY_INSTALL})"
        )


# --- the job's objects -----------------------------------------------------------------------------------------
@dataclass
class JobObjects:
    """What `cluster submit` creates, and what the job's pods need that it does not create."""

    rayjob: dict[str, Any]
    config_map: dict[str, Any]
    network_policy: dict[str, Any] | None  # None when the values turn networkPolicy off
    release: str
    service_account: str
    model_claim: str | None  # the release's model PVC the pods mount (model.volume: pvc), else None

    @property
    def namespace(self) -> str:
        return self.rayjob["metadata"]["namespace"]

    @property
    def name(self) -> str:
        return self.rayjob["metadata"]["name"]

    def documents(self) -> list[dict[str, Any]]:
        return [d for d in (self.rayjob, self.config_map, self.network_policy) if d is not None]


def _pod_templates(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster.get("workerGroupSpecs", []))]
    if "submitterPodTemplate" in spec:
        templates.append(spec["submitterPodTemplate"])
    return templates


def _claims(rayjob: dict[str, Any]) -> set[str]:
    return {
        v["persistentVolumeClaim"]["claimName"]
        for t in _pod_templates(rayjob)
        for v in t["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }


def _label(obj: dict[str, Any], name: str) -> None:
    labels = obj.setdefault("labels", {})
    labels[JOB_LABEL] = name
    if "app.kubernetes.io/managed-by" in labels:
        labels["app.kubernetes.io/managed-by"] = MANAGED_BY


def job_network_policy(chart_policy: dict[str, Any], name: str) -> dict[str, Any]:
    """The release policy's rule for this job's cluster: the same peers (the release's pods on every port, the KubeRay
    operator on the dashboard and serve port), applied to the job's pods only, and nothing open to other sources.

    Taken from the chart's own rendered NetworkPolicy (templates/networkpolicy.yaml), so the operator's namespace and
    labels (networkPolicy.kuberayOperator) and the serve port are the release's, never restated here. Ray's Jobs API
    on 8265 runs any code it is sent, unauthenticated (CVE-2023-48022): the client and scraper rules, which open
    other ports to wider sources, are left out."""
    policy = copy.deepcopy(chart_policy)
    rules = []
    for rule in policy["spec"].get("ingress") or []:
        ports = {p.get("port") for p in rule.get("ports") or []}
        peers = rule.get("from")
        if not peers:  # a rule open to every source never applies to a job's Ray ports
            continue
        internal = "ports" not in rule and all(set(p) == {"podSelector"} for p in peers)
        if internal or 8265 in ports:
            rules.append(rule)
    policy["metadata"]["name"] = f"{name}-job"
    _label(policy["metadata"], name)
    policy["spec"]["podSelector"] = {"matchLabels": {JOB_LABEL: name}}
    policy["spec"]["policyTypes"] = ["Ingress"]
    policy["spec"]["ingress"] = rules
    return policy


def job_objects(
    job: JobConfig,
    name: str,
    namespace: str,
    release: str = "phifleet",
    value_files: list[Path] | None = None,
    service_account: str | None = None,
    chart: Path = DEFAULT_CHART,
) -> JobObjects:
    """The chart's RayJob, job ConfigMap and a NetworkPolicy for this job, as part of `release`.

    The chart renders twice: once as the release itself (with its value files) to learn what its pods use — the
    release's ServiceAccount (workload identity is federated to it; KubeRay binds the autoscaler's Role to the
    pods' account) and its model claim (`<release fullname>-models`, or `model.pvc.existingClaim`) — and once named
    after the job with those two pinned, so the job's pods mount the claim the release's fetch fills instead of a
    `<job>-models` claim nobody creates. Labels stay the release's (`app.kubernetes.io/instance=<release>`: what
    `cluster status --release` lists) plus `phifleet.io/job=<name>`."""
    values = chart_values(job=job)
    as_release = template([values], release=release, namespace=namespace, chart=chart, value_files=value_files)
    release_jobs = [d for d in as_release if d["kind"] == "RayJob"]
    if len(release_jobs) != 1:
        raise ClusterError(f"the chart rendered {len(release_jobs)} RayJob(s) for this job config, expected 1")
    release_job = release_jobs[0]
    head = release_job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    account = service_account or head.get("serviceAccountName") or "default"
    claims = _claims(release_job)
    overrides: dict[str, Any] = {"fullnameOverride": name, "serviceAccount": {"create": False, "name": account}}
    if claims:
        overrides["model"] = {"pvc": {"existingClaim": next(iter(claims))}}
    docs = template([values, overrides], release=release, namespace=namespace, chart=chart, value_files=value_files)
    jobs = [d for d in docs if d["kind"] == "RayJob"]
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{name}-job"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if len(jobs) != 1 or len(maps) != 1:
        raise ClusterError(
            f"the chart rendered {len(jobs)} RayJob(s) and {len(maps)} job ConfigMap(s), expected 1 each"
        )
    rayjob, config_map = jobs[0], maps[0]
    rayjob["metadata"]["name"] = name  # the chart's `<fullname>-job`: the CLI names the job itself
    for obj in (rayjob, config_map):
        _label(obj["metadata"], name)
    for pod in _pod_templates(rayjob):
        _label(pod["metadata"], name)
    policy = job_network_policy(policies[0], name) if policies else None
    return JobObjects(rayjob, config_map, policy, release, account, next(iter(_claims(rayjob)), None))


# --- submit ----------------------------------------------------------------------------------------------------
def preflight(kube: Kube, objs: JobObjects) -> None:
    """Refuse a job whose pods could not start: KubeRay would leave it Initializing until its deadline (a day by
    default) with the reason only in a RayCluster event — a missing ServiceAccount keeps the pods from being
    created, a missing claim keeps them Pending."""
    ns = objs.namespace
    install = f"install release {objs.release} in {ns} (helm install {objs.release} ...)"
    _require(
        kube,
        SERVICEACCOUNTS,
        ns,
        objs.service_account,
        f"ServiceAccount {ns}/{objs.service_account} not found: the job's pods run as the release's account — "
        f"{install}, or pass --release/--service-account",
    )
    if objs.model_claim is not None:
        _require(
            kube,
            CLAIMS,
            ns,
            objs.model_claim,
            f"PersistentVolumeClaim {ns}/{objs.model_claim} not found: the job's pods mount the release's model "
            f"claim (model.volume: pvc) — {install}, or name an existing claim with model.pvc.existingClaim in a "
            "-f values file",
        )


def _require(kube: Kube, resource: Resource, ns: str, name: str, missing: str) -> None:
    """The object exists, or ClusterError(``missing``); other refusals (403, 401) pass through as they are."""
    try:
        kube.get(resource, ns, name)
    except ClusterError as exc:
        if not _missing(exc):
            raise
        raise ClusterError(missing) from exc


def _owner(rayjob: dict[str, Any]) -> dict[str, Any]:
    # No blockOwnerDeletion: setting it needs `update rayjobs/finalizers` where OwnerReferencesPermissionEnforcement
    # is on; background deletion (kubectl's default) collects the dependents without it.
    meta = rayjob["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RayJob", "name": meta["name"], "uid": meta["uid"]}


def submit(kube: Kube, objs: JobObjects) -> dict[str, Any]:
    """Create the job: its ConfigMap and NetworkPolicy first (the pods find their config, and are never reachable
    without the policy), then the RayJob, then make the RayJob their owner, so they are garbage collected with it.
    All or nothing: when a step fails, what this call created is deleted again and the error says what was left."""
    dependents = [(CONFIGMAPS, objs.config_map)]
    if objs.network_policy is not None:
        dependents.append((NETWORKPOLICIES, objs.network_policy))
    created: list[tuple[Resource, str]] = []
    try:
        for res, body in dependents:
            kube.create(res, body)
            created.append((res, body["metadata"]["name"]))
        rayjob = kube.create(RAYJOBS, objs.rayjob)
        created.append((RAYJOBS, objs.name))
        owned = {"metadata": {"ownerReferences": [_owner(rayjob)]}}
        for res, body in dependents:
            kube.patch(res, objs.namespace, body["metadata"]["name"], owned)
    except ClusterError as exc:
        left = _undo(kube, objs.namespace, created)
        if left:
            raise ClusterError(f"{exc}; left behind, delete by hand: {', '.join(left)}") from exc
        raise
    return rayjob


def _undo(kube: Kube, namespace: str, created: list[tuple[Resource, str]]) -> list[str]:
    """Delete what a failed submit created, newest first; the objects it could not delete."""
    left = []
    for res, name in reversed(created):
        try:
            kube.delete(res, namespace, name)
        except ClusterError as exc:
            if not _missing(exc):
                left.append(f"{res.kind} {namespace}/{name} ({exc})")
    return left


# --- follow ----------------------------------------------------------------------------------------------------
def job_state(obj: dict[str, Any]) -> tuple[str, str, str]:
    status = obj.get("status") or {}
    return status.get("jobDeploymentStatus", ""), status.get("jobStatus", ""), status.get("message", "")


def describe(obj: dict[str, Any]) -> str:
    """`Running RUNNING`, `Retrying FAILED (attempt 1 of 3 failed) - message`: one line of a RayJob's state."""
    deployment, status, message = job_state(obj)
    failed = (obj.get("status") or {}).get("failed") or 0
    limit = (obj.get("spec") or {}).get("backoffLimit")
    text = f"{deployment or 'Pending'} {status}".rstrip()
    if failed and limit is not None:
        text += f" (attempt {failed} of {limit + 1} failed)"
    return text + (f" - {message}" if message else "")


def wait(
    kube: Kube,
    name: str,
    namespace: str,
    timeout_s: float,
    poll_s: float = 5.0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Follow a RayJob until its jobDeploymentStatus is final (FINAL_DEPLOYMENT_STATES), echoing each change."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        obj = kube.get(RAYJOBS, namespace, name)
        line = describe(obj)
        if line != last:
            echo(f"{name}: {line}")
            last = line
        if job_state(obj)[0] in FINAL_DEPLOYMENT_STATES:
            return obj
        if time.monotonic() > deadline:
            state = job_state(obj)[0] or "Pending"
            raise ClusterError(f"RayJob {namespace}/{name} not finished after {timeout_s:.0f} s (still {state})")
        time.sleep(poll_s)


def succeeded(obj: dict[str, Any]) -> bool:
    deployment, status, _ = job_state(obj)
    return deployment == "Complete" and status == "SUCCEEDED"


# --- status ----------------------------------------------------------------------------------------------------
@dataclass
class ReleaseStatus:
    services: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    endpoints: dict[str, str]


def release_status(kube: Kube, release: str, namespace: str) -> ReleaseStatus:
    """The release's RayServices and RayJobs (the chart's and CLI-submitted ones: both carry its instance label)."""
    selector = f"app.kubernetes.io/instance={release}"
    services, jobs = kube.list(RAYSERVICES, namespace, selector), kube.list(RAYJOBS, namespace, selector)
    endpoints: dict[str, str] = {}
    for svc in services:
        name = f"{svc['metadata']['name']}-serve-svc"
        try:
            s = kube.get(SERVICES, namespace, name)
        except ClusterError as exc:
            if not _missing(exc):
                raise
            continue
        ports = (s.get("spec") or {}).get("ports") or []
        port = next((p["port"] for p in ports if p.get("name") == "serve"), None) or 8000
        endpoints[svc["metadata"]["name"]] = f"http://{name}.{namespace}.svc:{port}/v1"
    return ReleaseStatus(services, jobs, endpoints)


def format_status(status: ReleaseStatus, release: str, namespace: str) -> str:
    if not status.services and not status.jobs:
        return f"no RayService or RayJob of release {release} in namespace {namespace}"
    lines: list[str] = []
    for svc in status.services:
        name, st = svc["metadata"]["name"], svc.get("status") or {}
        conditions = ", ".join(f"{c['type']}={c['status']}" for c in st.get("conditions", [])) or "none yet"
        lines.append(f"RayService {name}: {st.get('serviceStatus') or 'Pending'} (conditions: {conditions})")
        for which in ("activeServiceStatus", "pendingServiceStatus"):
            part = st.get(which) or {}
            if not part.get("rayClusterName"):
                continue
            rc = part.get("rayClusterStatus") or {}
            lines.append(
                f"  {which[:-13]} cluster {part['rayClusterName']}: {rc.get('state', '?')}, workers "
                f"{rc.get('readyWorkerReplicas', 0)} ready / {rc.get('availableWorkerReplicas', 0)} available / "
                f"{rc.get('desiredWorkerReplicas', 0)} desired (max {rc.get('maxWorkerReplicas', '?')}), "
                f"GPUs {rc.get('desiredGPU', '0')}"
            )
            for app, a in sorted((part.get("applicationStatuses") or {}).items()):
                lines.append(
                    f"    app {app}: {a.get('status', '?')}" + (f" - {a['message']}" if a.get("message") else "")
                )
                for dep, d in sorted((a.get("serveDeploymentStatuses") or {}).items()):
                    msg = f" - {d['message']}" if d.get("message") else ""
                    lines.append(f"      {dep}: {d.get('status', '?')}{msg}")
        if name in status.endpoints:
            lines.append(f"  endpoint: {status.endpoints[name]}")
    for job in status.jobs:
        by_cli = " (phifleet cluster submit)" if JOB_LABEL in (job["metadata"].get("labels") or {}) else ""
        lines.append(f"RayJob {job['metadata']['name']}{by_cli}: {describe(job)}")
    return "\n".join(lines)
