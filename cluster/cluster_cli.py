"""`phifleet cluster render|submit|status`: the operator's commands (Kubernetes through the kubernetes client)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import yaml


def add_parser(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser(
        "cluster",
        help="KubeRay on Kubernetes: render chart values, submit and follow batch jobs, show a release",
        description="Operate phifleet on Kubernetes (KubeRay v1.7): the objects come from helm/phifleet.",
    )
    csub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="CLUSTER_COMMAND")

    render = csub.add_parser(
        "render",
        help="print the chart values that run a serve and/or job config (helm install -f <that>)",
        description="Chart values derived from phifleet configs, so configs and chart never drift.",
    )
    render.add_argument("--serve-config", type=Path, default=None, help="serve.config.ServeConfig, YAML or JSON")
    render.add_argument("--job-config", type=Path, default=None, help="jobs.config.JobConfig (label --dump-config)")

    submit = csub.add_parser(
        "submit",
        help="run a batch job as a RayJob on the cluster (same job config as label/generate/batch)",
        description=(
            "Renders the chart's RayJob for the job config (a file from `phifleet label ... --dump-config`) as part "
            "of a release (its ServiceAccount, model claim and labels), creates it with its ConfigMap and "
            "NetworkPolicy (owned by the RayJob, deleted with it) and, with --wait, follows it until KubeRay is done "
            "(retries included)."
        ),
    )
    submit.add_argument("--config", type=Path, required=True, help="the job config, YAML or JSON")
    submit.add_argument("--name", default=None, help="RayJob name (default: phifleet-<task>-<time>)")
    submit.add_argument(
        "-f", "--values", type=Path, action="append", default=[], help="chart values file(s): the release's"
    )
    submit.add_argument(
        "--release",
        default="phifleet",
        help="Helm release the job belongs to: its ServiceAccount, model claim and labels (`cluster status` lists it)",
    )
    submit.add_argument(
        "--service-account", default=None, help="ServiceAccount of the job's pods (default: the release's)"
    )
    submit.add_argument("--chart", type=Path, default=None, help="chart directory (default: helm/phifleet)")
    submit.add_argument("--wait", action="store_true", help="follow the job to the end; fail if it fails")
    submit.add_argument("--timeout", type=float, default=86400, help="seconds --wait waits")
    submit.add_argument("--poll", type=float, default=5.0, help="seconds between status checks")
    submit.add_argument("--dry-run", action="store_true", help="print the objects instead of creating them")
    _kube_args(submit)

    status = csub.add_parser(
        "status",
        help="RayService/RayJob conditions, serve application health, workers and the endpoint of a release",
    )
    status.add_argument("--release", default="phifleet", help="Helm release name")
    _kube_args(status)


def _kube_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the pod's in-cluster account)",
    )
    p.add_argument("--context", default=None, help="kubeconfig context")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def cmd_render(args: argparse.Namespace) -> int:
    from phifleet.cluster.chart_values import chart_values
    from phifleet.jobs.config import JobConfig
    from phifleet.serve.config import ServeConfig

    if args.serve_config is None and args.job_config is None:
        print("phifleet: error: give --serve-config and/or --job-config", file=sys.stderr)
        return 2
    serve = ServeConfig.model_validate(_load(args.serve_config)) if args.serve_config else None
    job = JobConfig.model_validate(_load(args.job_config)) if args.job_config else None
    print(yaml.safe_dump(chart_values(serve=serve, job=job), sort_keys=False), end="")
    return 0


def default_job_name(kind: str) -> str:
    return f"phifleet-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_submit(args: argparse.Namespace) -> int:
    from phifleet.cluster import kube
    from phifleet.cluster.helm import DEFAULT_CHART, HelmError
    from phifleet.jobs.config import JobConfig

    job = JobConfig.model_validate(_load(args.config))
    name = args.name or default_job_name(job.task.kind)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", name):
        print(f"phifleet: error (name): {name!r} is not a DNS label of at most 40 characters", file=sys.stderr)
        return 2
    try:
        objs = kube.job_objects(
            job, name, args.namespace, args.release, args.values, args.service_account, args.chart or DEFAULT_CHART
        )
        if args.dry_run:
            print(yaml.safe_dump_all(objs.documents(), sort_keys=False), end="")
            return 0
        api = kube.Kube(kube.api_client(args.kubeconfig, args.context))
        kube.require_kuberay(api)
        kube.preflight(api, objs)
        kube.submit(api, objs)
        claim = f", models on PVC {objs.model_claim}" if objs.model_claim else ""
        print(
            f"submitted RayJob {args.namespace}/{name} (release {args.release}, ServiceAccount "
            f"{objs.service_account}{claim}): {job.input.path} -> {job.output.path}",
            flush=True,
        )
        if not args.wait:
            print(f"follow it: phifleet cluster submit ... --wait, or kubectl -n {args.namespace} get rayjob {name} -w")
            return 0
        final = kube.wait(api, name, args.namespace, args.timeout, args.poll, echo=lambda s: print(s, flush=True))
    except (kube.ClusterError, HelmError) as exc:
        print(f"phifleet: error: {exc}", file=sys.stderr)
        return 1
    if not kube.succeeded(final):
        deployment, status, message = kube.job_state(final)
        print(f"phifleet: RayJob {name} failed ({status or deployment}): {message}", file=sys.stderr)
        return 1
    print(_job_summary(job))
    return 0


def _job_summary(job) -> str:
    """The job's own summary from its manifest, when this machine can read the output location."""
    import json

    import fsspec

    from phifleet.jobs.pipeline import summary_text

    path = job.output.path.rstrip("/") + "/manifest.json"
    try:
        with fsspec.open(path, "r") as fh:
            return summary_text(json.load(fh))
    except Exception as exc:  # a remote store this machine has no credentials for: say where the summary is
        return f"job succeeded; its summary is {path} ({type(exc).__name__} reading it from here)"


def cmd_status(args: argparse.Namespace) -> int:
    from phifleet.cluster import kube

    try:
        api = kube.Kube(kube.api_client(args.kubeconfig, args.context))
        status = kube.release_status(api, args.release, args.namespace)
    except kube.ClusterError as exc:
        print(f"phifleet: error: {exc}", file=sys.stderr)
        return 1
    print(kube.format_status(status, args.release, args.namespace))
    return 0 if status.services or status.jobs else 1


COMMANDS = {"render": cmd_render, "submit": cmd_submit, "status": cmd_status}
