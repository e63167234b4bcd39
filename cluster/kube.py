"""The operator's side of a cluster, through the kubernetes client: submit and follow a RayJob, report a release.

Objects come from the chart (cluster.helm.template), so a CLI-submitted job runs the same pods as an installed
release's; this module only creates, reads and summarises them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from phifleet.cluster.chart_values import chart_values
from phifleet.cluster.helm import DEFAULT_CHART, template
from phifleet.jobs.config import JobConfig

GROUP, VERSION = "ray.io", "v1"
JOB_TERMINAL = {"Complete", "Failed", "ValidationFailed"}
JOB_STATUS_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class ClusterError(RuntimeError):
    pass


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """The kubeconfig's (or the pod's in-cluster) credentials."""
    if kubeconfig is None and context is None:
        try:
            kube_config.load_incluster_config()
            return client.ApiClient()
        except kube_config.ConfigException:
            pass
    try:
        return kube_config.new_client_from_config(config_file=kubeconfig, context=context)
    except (kube_config.ConfigException, FileNotFoundError) as exc:
        raise ClusterError(f"no Kubernetes credentials: {exc}") from exc


def require_kuberay(api: client.ApiClient) -> None:
    groups = client.ApisApi(api).get_api_versions().groups or []
    versions = {v.version for g in groups if g.name == GROUP for v in g.versions}
    if VERSION not in versions:
        raise ClusterError(
            "this cluster does not serve ray.io/v1: install the KubeRay operator v1.7 first "
            "(helm install kuberay-operator kuberay/kuberay-operator --version 1.7.0)"
        )


def job_objects(
    job: JobConfig,
    name: str,
    namespace: str,
    value_files: list[Path] | None = None,
    service_account: str | None = None,
    chart: Path = DEFAULT_CHART,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RayJob, its config ConfigMap) rendered by the chart for this job; cluster settings from value_files."""
    overrides: dict[str, Any] = {
        "fullnameOverride": name,
        "serviceAccount": {"create": False, **({"name": service_account} if service_account else {})},
    }
    docs = template(
        [chart_values(job=job), overrides], release=name, namespace=namespace, chart=chart, value_files=value_files
    )
    jobs = [d for d in docs if d["kind"] == "RayJob"]
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{name}-job"]
    if len(jobs) != 1 or len(maps) != 1:
        raise ClusterError(
            f"the chart rendered {len(jobs)} RayJob(s) and {len(maps)} job ConfigMap(s), expected 1 each"
        )
    rayjob = jobs[0]
    rayjob["metadata"]["name"] = name  # the chart's `<fullname>-job`: the CLI names the job itself
    return rayjob, maps[0]


def submit(api: client.ApiClient, rayjob: dict[str, Any], config_map: dict[str, Any]) -> dict[str, Any]:
    """Create the RayJob, then its ConfigMap owned by it (deleted with the job; the head waits for the volume)."""
    namespace = rayjob["metadata"]["namespace"]
    custom = client.CustomObjectsApi(api)
    try:
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "rayjobs", rayjob)
    except ApiException as exc:
        if exc.status == 409:
            raise ClusterError(
                f"RayJob {namespace}/{rayjob['metadata']['name']} already exists: pick another --name"
            ) from exc
        raise ClusterError(f"creating RayJob failed ({exc.status}): {exc.body}") from exc
    config_map["metadata"]["ownerReferences"] = [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RayJob",
            "name": created["metadata"]["name"],
            "uid": created["metadata"]["uid"],
            "blockOwnerDeletion": True,
        }
    ]
    try:
        client.CoreV1Api(api).create_namespaced_config_map(namespace, config_map)
    except ApiException as exc:
        raise ClusterError(f"creating the job's ConfigMap failed ({exc.status}): {exc.body}") from exc
    return created


def job_state(obj: dict[str, Any]) -> tuple[str, str, str]:
    status = obj.get("status") or {}
    return status.get("jobDeploymentStatus", ""), status.get("jobStatus", ""), status.get("message", "")


def wait(
    api: client.ApiClient,
    name: str,
    namespace: str,
    timeout_s: float,
    poll_s: float = 5.0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Follow a RayJob to a terminal state, echoing each change; returns the final object."""
    custom = client.CustomObjectsApi(api)
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "rayjobs", name)
        state = job_state(obj)
        if state != last:
            deployment, status, message = state
            echo(f"{name}: {deployment or 'Pending'} {status}".rstrip() + (f" - {message}" if message else ""))
            last = state
        if state[0] in JOB_TERMINAL or (state[1] in JOB_STATUS_TERMINAL and state[0] != "Running"):
            return obj
        if time.monotonic() > deadline:
            raise ClusterError(f"RayJob {namespace}/{name} not finished after {timeout_s:.0f} s (still {state[0]})")
        time.sleep(poll_s)


def succeeded(obj: dict[str, Any]) -> bool:
    deployment, status, _ = job_state(obj)
    return status == "SUCCEEDED" and deployment != "Failed"


@dataclass
class ReleaseStatus:
    services: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    endpoints: dict[str, str]


def release_status(api: client.ApiClient, release: str, namespace: str) -> ReleaseStatus:
    selector = f"app.kubernetes.io/instance={release}"
    custom = client.CustomObjectsApi(api)

    def items(plural: str) -> list[dict[str, Any]]:
        out = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, label_selector=selector)
        return out.get("items", [])

    services, jobs = items("rayservices"), items("rayjobs")
    endpoints: dict[str, str] = {}
    core = client.CoreV1Api(api)
    for svc in services:
        name = f"{svc['metadata']['name']}-serve-svc"
        try:
            s = core.read_namespaced_service(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            continue
        port = next((p.port for p in s.spec.ports or [] if p.name == "serve"), None) or 8000
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
        deployment, js, message = job_state(job)
        lines.append(
            f"RayJob {job['metadata']['name']}: {deployment or 'Pending'} {js}".rstrip()
            + (f" - {message}" if message else "")
        )
    return "\n".join(lines)
