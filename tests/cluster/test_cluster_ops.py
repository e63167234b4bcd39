"""`phifleet cluster render|submit|status` with the real kubernetes client against an in-process fake API server
(tests/cluster/fake_kube.py: no API server can run here, and it is the only fake). The fake's "operator" either runs
a submitted RayJob's entrypoint for real (`python -m phifleet.jobs` on a local Ray with phi4-tiny), from the
ConfigMap the CLI created, or walks it through a scripted sequence of KubeRay v1.7.0's real statuses (retries,
failures); either way only once the job's pods could start (their ServiceAccount and claims exist).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from phifleet.cluster.cli import main
from phifleet.jobs.config import JobConfig
from phifleet.serve.config import ServeConfig
from tests.cluster.fake_kube import FakeKube, ScriptedOperator, grants
from tests.helm.conftest import CHART, KUBE_VERSION, render, run_helm

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
MOUNT = "/etc/phifleet/job/job.json"


class EntrypointOperator:
    """Plays KubeRay for RayJobs: runs the entrypoint locally and reports its progress in .status."""

    def __init__(self, fake: FakeKube, workdir: Path) -> None:
        self.fake, self.workdir = fake, workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.entrypoints: list[str] = []

    def __call__(self, job: dict[str, Any]) -> None:
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        proc = self.procs.get(name)
        if proc is None:
            if self.fake.pod_blockers(job):  # no account, claim or ConfigMap: the pods cannot start
                job["status"] = {"jobDeploymentStatus": "Initializing"}
                return
            cm = self.fake.objects[("configmaps", ns, f"{name}-job")]
            assert cm["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
            config = self.workdir / f"{name}.json"
            config.write_text(cm["data"]["job.json"])
            entrypoint = job["spec"]["entrypoint"]
            self.entrypoints.append(entrypoint)
            argv = entrypoint.replace(MOUNT, str(config)).split()
            assert argv[:3] == ["python", "-m", "phifleet.jobs"]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
            log = (self.workdir / f"{name}.log").open("w")
            self.procs[name] = subprocess.Popen([sys.executable, *argv[1:]], env=env, stdout=log, stderr=log)
            job["status"] = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
            return
        rc = proc.poll()
        if rc == 0:
            job["status"] = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
        elif rc is not None:
            tail = (self.workdir / f"{name}.log").read_text().strip().splitlines()[-1:]
            message = f"Job entrypoint command failed with exit code {rc}: {' '.join(tail)}"
            job["status"] = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": message}


def job_file(tmp_path: Path, input_path: str, output: Path) -> Path:
    config = JobConfig.model_validate(
        {
            "input": {"path": input_path},
            "output": {"path": str(output)},
            "task": {"kind": "label", "labels": ["positive", "negative", "neutral"]},
            "pool": {"num_cpus": 0.5, "batch_size": 64},
        }
    )
    path = tmp_path / "job.yaml"
    data = config.model_dump(mode="json", exclude_defaults=True)
    data["task"]["kind"] = "label"
    path.write_text(yaml.safe_dump(data))
    return path


def install_release(fake: FakeKube, release: str, namespace: str, claim: str | None = None) -> None:
    """What `helm install <release>` left in the namespace that a job's pods use: its ServiceAccount (the chart's
    fullname) and, with model.volume: pvc, its model claim."""
    account = release if "phifleet" in release else f"{release}-phifleet"
    meta = {"name": account, "namespace": namespace, "labels": {"app.kubernetes.io/instance": release}}
    fake.put({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
    if claim:
        fake.put(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "64Gi"}}},
            }
        )


def test_submit_wait_runs_the_chart_rayjob_to_completion(tmp_path, capsys, tiny_dir):
    config = job_file(tmp_path, str(ROOT / "examples" / "reviews.jsonl"), tmp_path / "out")
    with FakeKube() as fake:
        install_release(fake, "phifleet", "batch")
        operator = EntrypointOperator(fake, tmp_path)
        fake.on_get["rayjobs"] = operator
        kubeconfig = fake.kubeconfig(tmp_path)
        base = ["cluster", "submit", "--config", str(config), "--name", "reviews", "-n", "batch"]
        base += ["--kubeconfig", str(kubeconfig)]
        rc = main([*base, "--wait", "--poll", "0.5", "--timeout", "400"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "submitted RayJob batch/reviews" in out.out and "Complete SUCCEEDED" in out.out
        assert "300" in out.out  # the job's own summary, read from its manifest
        job = fake.objects[("rayjobs", "batch", "reviews")]
        assert job["spec"]["shutdownAfterJobFinishes"] is True
        assert operator.entrypoints == [f"python -m phifleet.jobs --config {MOUNT}"]
        groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        assert [g["groupName"] for g in groups] == ["cpu"]  # a CPU-only job config gets CPU workers
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["counts"]["ok"] == 300
        # owned by the RayJob (garbage collected with it), and listed with the release it belongs to
        uid = job["metadata"]["uid"]
        for plural in ("configmaps", "networkpolicies"):
            owners = fake.objects[(plural, "batch", "reviews-job")]["metadata"]["ownerReferences"]
            assert [o["uid"] for o in owners] == [uid]
        assert main(["cluster", "status", "-n", "batch", "--kubeconfig", str(kubeconfig)]) == 0
        assert "RayJob reviews (phifleet cluster submit): Complete SUCCEEDED" in capsys.readouterr().out

        # the same name again: a clear conflict, nothing replaced or deleted
        before = {k: json.dumps(v, sort_keys=True) for k, v in fake.objects.items()}
        assert main(base) == 1
        err = capsys.readouterr().err
        assert "already exists (409)" in err and len(err.strip().splitlines()) == 1
        assert {k: json.dumps(v, sort_keys=True) for k, v in fake.objects.items()} == before


def test_a_failing_job_fails_the_command_with_its_message(tmp_path, capsys):
    config = job_file(tmp_path, str(tmp_path / "missing.jsonl"), tmp_path / "out")
    with FakeKube() as fake:
        install_release(fake, "phifleet", "default")
        fake.on_get["rayjobs"] = EntrypointOperator(fake, tmp_path)
        args = ["cluster", "submit", "--config", str(config), "--name", "broken", "--wait", "--poll", "0.5"]
        rc = main([*args, "--kubeconfig", str(fake.kubeconfig(tmp_path)), "--timeout", "300"])
    err = capsys.readouterr().err
    assert rc == 1 and "RayJob broken failed (FAILED)" in err and "exit code" in err


def test_submit_refuses_a_cluster_without_kuberay(tmp_path, capsys):
    config = job_file(tmp_path, "in.jsonl", tmp_path / "out")
    with FakeKube(serve_kuberay=False) as fake:
        rc = main(["cluster", "submit", "--config", str(config), "--kubeconfig", str(fake.kubeconfig(tmp_path))])
        assert not fake.objects
    assert rc == 1 and "install the KubeRay operator" in capsys.readouterr().err


def test_submit_dry_run_uses_values_files(tmp_path, capsys):
    config = job_file(tmp_path, "abfs://corpora/in/", tmp_path / "out")
    values = CHART / "values-aks-h100.yaml"
    args = ["cluster", "submit", "--config", str(config), "--name", "j1", "-f", str(values), "--dry-run"]
    assert main(args) != 0  # the job's model is not where the release's model.fetch puts the weights
    assert "job.config.engine.model (phi4-tiny) must be /models/phi-4" in capsys.readouterr().err
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "engine": {"model": "/models/phi-4"}}))
    rc = main(args)
    assert rc == 0
    rayjob, config_map, policy = yaml.safe_load_all(capsys.readouterr().out)
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert head["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    # the default release's (phifleet) federated ServiceAccount and the model claim its fetch fills
    assert head["spec"]["serviceAccountName"] == "phifleet"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in head["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"phifleet-models"}
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["podSelector"] == {"matchLabels": {JOB: "j1"}}
    assert JobConfig.model_validate(json.loads(config_map["data"]["job.json"])).input.path == "abfs://corpora/in/"


def test_status_reports_conditions_apps_workers_and_endpoint(tmp_path, capsys, helm):
    (svc,) = [
        d for d in render(helm, "-f", str(CHART / "values-cpu-dev.yaml"), release="prod") if d["kind"] == "RayService"
    ]
    svc["status"] = {  # what KubeRay v1.7 reports for a healthy service
        "serviceStatus": "Running",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "UpgradeInProgress", "status": "False"}],
        "activeServiceStatus": {
            "rayClusterName": "prod-phifleet-raycluster-x7k2p",
            "rayClusterStatus": {
                "state": "ready",
                "readyWorkerReplicas": 2,
                "availableWorkerReplicas": 2,
                "desiredWorkerReplicas": 2,
                "maxWorkerReplicas": 2,
                "desiredGPU": "0",
            },
            "applicationStatuses": {
                "phifleet": {
                    "status": "RUNNING",
                    "serveDeploymentStatuses": {
                        "OpenAIIngress": {"status": "HEALTHY"},
                        "Phi4Replica": {"status": "UPSCALING", "message": "Upscaling from 1 to 2 replicas."},
                    },
                }
            },
        },
    }
    with FakeKube() as fake:
        fake.put(svc)
        fake.put(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "prod-phifleet-serve-svc", "namespace": "phifleet"},
                "spec": {"ports": [{"name": "serve", "port": 8000}]},
            }
        )
        kubeconfig = str(fake.kubeconfig(tmp_path))
        assert main(["cluster", "status", "--release", "prod", "-n", "phifleet", "--kubeconfig", kubeconfig]) == 0
        out = capsys.readouterr().out
        assert main(["cluster", "status", "--release", "other", "-n", "phifleet", "--kubeconfig", kubeconfig]) == 1
    assert "RayService prod-phifleet: Running (conditions: Ready=True, UpgradeInProgress=False)" in out
    assert "workers 2 ready / 2 available / 2 desired" in out
    assert "Phi4Replica: UPSCALING - Upscaling from 1 to 2 replicas." in out
    assert "endpoint: http://prod-phifleet-serve-svc.phifleet.svc:8000/v1" in out


def test_render_gives_values_that_reproduce_the_configs(tmp_path, capsys, helm):
    serve = ServeConfig.model_validate(
        {
            "engine": {"model": "/models/phi-4", "served_model_name": "phi-4"},
            "deployment": {"num_gpus": 1, "autoscaling": {"max_replicas": 3}},
        }
    )
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve.model_dump(mode="json")))
    job = job_file(tmp_path, "abfs://c/in/", tmp_path / "out")
    assert main(["cluster", "render", "--serve-config", str(tmp_path / "serve.yaml"), "--job-config", str(job)]) == 0
    values = tmp_path / "values.yaml"
    values.write_text(capsys.readouterr().out)
    docs = render(helm, "-f", str(values), "--set", "apiKeys.enabled=false")
    (svc,) = [d for d in docs if d["kind"] == "RayService"]
    args = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert ServeConfig.model_validate(args) == serve
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert JobConfig.model_validate(json.loads(cm["data"]["job.json"])) == JobConfig.model_validate(
        yaml.safe_load(job.read_text())
    )


@pytest.mark.parametrize(
    "argv", [["cluster", "render"], ["cluster", "submit", "--config", "x.yaml", "--name", "Bad_Name"]]
)
def test_bad_cluster_arguments(tmp_path, capsys, argv):
    if "x.yaml" in argv:
        argv = [a if a != "x.yaml" else str(job_file(tmp_path, "in.jsonl", tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    assert "phifleet: error" in capsys.readouterr().err


# --- finding 5 of issue 15: what a real cluster does to `cluster submit/status` ----------------------------------
JOB = "phifleet.io/job"
RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
COMPLETE = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "succeeded": 1}
# KubeRay v1.7.0 (rayjob_controller.go checkBackoffLimitAndUpdateStatusIfNeeded): a failed attempt with retries left
# is written as Retrying with jobStatus still FAILED; Retrying deletes the cluster and returns to New (""), and a
# new cluster is Initializing. Only Complete/Failed (IsJobDeploymentTerminal) are final; ValidationFailed never starts.
APP_FAILED = "Job entrypoint command failed with exit code 1"
RETRIED = [
    {"jobDeploymentStatus": "Initializing", "rayClusterName": "j1-x7k2p"},
    RUNNING,
    {
        "jobDeploymentStatus": "Retrying",
        "jobStatus": "FAILED",
        "reason": "AppFailed",
        "failed": 1,
        "message": APP_FAILED,
    },
    {"jobDeploymentStatus": "", "jobStatus": "", "failed": 1},
    {"jobDeploymentStatus": "Initializing", "failed": 1, "rayClusterName": "j1-m4q9z"},
    {**RUNNING, "failed": 1},
    {**COMPLETE, "failed": 1},
]
EXHAUSTED = [
    RUNNING,
    {"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED", "failed": 1, "message": APP_FAILED},
    {**RUNNING, "failed": 1},
    {"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED", "failed": 2, "message": APP_FAILED},
    {**RUNNING, "failed": 2},
    {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "failed": 3, "message": APP_FAILED},
]
INVALID = [{"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed", "message": "bad spec"}]


def pvc_values(tmp_path: Path) -> Path:
    """The release's values file: weights on a claim (the chart's `<fullname>-models`)."""
    path = tmp_path / "release-values.yaml"
    path.write_text(yaml.safe_dump({"model": {"volume": "pvc"}}))
    return path


def cli(fake: FakeKube, tmp_path: Path, *args: str) -> int:
    return main([*args, "--kubeconfig", str(fake.kubeconfig(tmp_path))])


def submit_job(fake: FakeKube, tmp_path: Path, config: Path, name: str, *extra: str) -> int:
    return cli(fake, tmp_path, "cluster", "submit", "--config", str(config), "--name", name, "-n", "batch", *extra)


def job_parts(fake: FakeKube, name: str, namespace: str = "batch") -> set[str]:
    """The kinds a job's objects are still there as."""
    keys = {("rayjobs", name), ("configmaps", f"{name}-job"), ("networkpolicies", f"{name}-job")}
    return {p for (p, ns, n) in fake.objects if ns == namespace and (p, n) in keys}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phifleet: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_job_pods_get_the_releases_account_and_model_claim_and_status_lists_the_job(tmp_path, capsys):
    config, values = job_file(tmp_path, "in.jsonl", tmp_path / "out"), pvc_values(tmp_path)
    with FakeKube() as fake:
        install_release(fake, "prod", "batch", claim="prod-phifleet-models")
        fake.on_get["rayjobs"] = ScriptedOperator(fake, [RUNNING, COMPLETE])
        rc = submit_job(fake, tmp_path, config, "j1", "-f", str(values), "--release", "prod", "--wait", "--poll", "0")
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "(release prod, ServiceAccount prod-phifleet, models on PVC prod-phifleet-models)" in out.out
        job = fake.objects[("rayjobs", "batch", "j1")]
        cluster = job["spec"]["rayClusterSpec"]
        pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
        for pod in [*pods, job["spec"]["submitterPodTemplate"]]:
            assert pod["spec"]["serviceAccountName"] == "prod-phifleet"  # not `default`: identity, autoscaler Role
            assert pod["metadata"]["labels"][JOB] == "j1"
        for pod in pods:
            claims = {
                v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v
            }
            assert claims == {"prod-phifleet-models"}  # the release's claim, not a `j1-models` nobody creates
        assert fake.pod_blockers(job) == []
        labels = job["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "prod" and labels["app.kubernetes.io/managed-by"] == "phifleet"
        assert cli(fake, tmp_path, "cluster", "status", "--release", "prod", "-n", "batch") == 0
        assert "RayJob j1 (phifleet cluster submit): Complete SUCCEEDED" in capsys.readouterr().out

        # --service-account still wins over the release's
        fake.put({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner", "namespace": "batch"}})
        args = ["-f", str(values), "--release", "prod", "--service-account", "runner"]
        assert submit_job(fake, tmp_path, config, "j2", *args) == 0
        head = fake.objects[("rayjobs", "batch", "j2")]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
        assert head["spec"]["serviceAccountName"] == "runner"


def test_a_job_whose_pods_could_not_start_is_refused_before_anything_is_created(tmp_path, capsys):
    config, values = job_file(tmp_path, "in.jsonl", tmp_path / "out"), pvc_values(tmp_path)
    args = ["-f", str(values), "--release", "prod"]
    with FakeKube() as fake:
        assert submit_job(fake, tmp_path, config, "j1", *args) == 1
        line = one_line(capsys.readouterr().err)
        assert "ServiceAccount batch/prod-phifleet not found" in line and "--service-account" in line
        install_release(fake, "prod", "batch")  # the account, but no model claim
        assert submit_job(fake, tmp_path, config, "j1", *args) == 1
        assert "PersistentVolumeClaim batch/prod-phifleet-models not found" in one_line(capsys.readouterr().err)
        assert not job_parts(fake, "j1")

        # what KubeRay does with such a job (the claim gone after the check): Initializing, the reason in an Event
        install_release(fake, "prod", "batch", claim="prod-phifleet-models")
        fake.on_get["rayjobs"] = ScriptedOperator(fake, [COMPLETE])
        assert submit_job(fake, tmp_path, config, "j1", *args) == 0
        del fake.objects[("persistentvolumeclaims", "batch", "prod-phifleet-models")]
        from phifleet.cluster import kube

        api = kube.Kube(kube.api_client(str(fake.kubeconfig(tmp_path))))
        with pytest.raises(kube.ClusterError, match=r"not finished after 0 s \(still Initializing\)"):
            kube.wait(api, "j1", "batch", timeout_s=0.2, poll_s=0.05, echo=lambda _: None)
        (event,) = fake.of_kind("Event", "batch")
        assert event["reason"] == "FailedScheduling" and "prod-phifleet-models" in event["message"]


@pytest.mark.parametrize(
    ("script", "rc", "shown"),
    [
        (RETRIED, 0, f"j1: Retrying FAILED (attempt 1 of 3 failed) - {APP_FAILED}"),
        (EXHAUSTED, 1, f"phifleet: RayJob j1 failed (FAILED): {APP_FAILED}"),
        (INVALID, 1, "phifleet: RayJob j1 failed (ValidationFailed): bad spec"),
    ],
    ids=["retried", "retries-exhausted", "validation-failed"],
)
def test_wait_ends_only_on_kuberays_final_states(tmp_path, capsys, script, rc, shown):
    config = job_file(tmp_path, "in.jsonl", tmp_path / "out")
    with FakeKube() as fake:
        install_release(fake, "phifleet", "batch")
        operator = ScriptedOperator(fake, script)
        fake.on_get["rayjobs"] = operator
        assert submit_job(fake, tmp_path, config, "j1", "--wait", "--poll", "0") == rc
        assert operator.steps["j1"] == len(script)  # followed to the script's end: Retrying+FAILED is not the end
    out = capsys.readouterr()
    assert shown in out.out + out.err


def test_submit_creates_the_configmap_first_owns_it_and_leaves_no_orphans(tmp_path, capsys):
    from tests.cluster.fake_kube import status

    config = job_file(tmp_path, "in.jsonl", tmp_path / "out")
    with FakeKube() as fake:
        install_release(fake, "phifleet", "batch")
        assert submit_job(fake, tmp_path, config, "j1") == 0
        writes = [(verb, plural) for verb, _, plural in fake.requests if verb in ("create", "patch")]
        assert writes == [
            ("create", "configmaps"),  # the pods' config and their NetworkPolicy exist before any pod
            ("create", "networkpolicies"),
            ("create", "rayjobs"),
            ("patch", "configmaps"),  # then owned by the RayJob
            ("patch", "networkpolicies"),
        ]
        uid = fake.objects[("rayjobs", "batch", "j1")]["metadata"]["uid"]
        for plural in ("configmaps", "networkpolicies"):
            (owner,) = fake.objects[(plural, "batch", "j1-job")]["metadata"]["ownerReferences"]
            assert owner == {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "j1", "uid": uid}
        fake.delete("rayjobs", "batch", "j1")  # kubectl delete rayjob j1: the garbage collector takes the rest
        assert not job_parts(fake, "j1")
        capsys.readouterr()

        fake.served = {"rayservices"}  # the RayJob CRD missing: its create is refused, the ConfigMap goes again
        assert submit_job(fake, tmp_path, config, "j2") == 1
        line = one_line(capsys.readouterr().err)
        assert "this cluster does not serve rayjobs.ray.io (404 on its API): install the KubeRay operator" in line
        assert not job_parts(fake, "j2")

        fake.served = {"rayjobs", "rayservices"}  # a step after the RayJob fails: all three deleted again
        fake.faults[("patch", "networkpolicies")] = status(500, "InternalError", "etcdserver: request timed out")
        assert submit_job(fake, tmp_path, config, "j3") == 1
        line = one_line(capsys.readouterr().err)
        assert "patch NetworkPolicy batch/j3-job failed (500 InternalError): etcdserver: request timed out" in line
        assert not job_parts(fake, "j3")


def test_api_refusals_are_one_line_naming_the_cause(tmp_path, capsys):
    config = job_file(tmp_path, "in.jsonl", tmp_path / "out")
    status_args = ["cluster", "status", "-n", "batch"]
    with FakeKube() as fake:  # 401: credentials the API server does not accept
        rc = main([*status_args, "--kubeconfig", str(fake.kubeconfig(tmp_path, token="expired"))])
        assert rc == 1 and "(401 Unauthorized)" in one_line(capsys.readouterr().err)
    with FakeKube(rules=[{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["list"]}]) as fake:  # 403
        assert cli(fake, tmp_path, *status_args) == 1
        line = one_line(capsys.readouterr().err)
        assert 'forbidden (403): user "fake-user" may not list rayservices.ray.io in namespace batch' in line
        assert "submitter.rbac.create=true" in line
    with FakeKube(serve_kuberay=False) as fake:  # 404 on the resource: KubeRay's CRDs are not installed
        assert cli(fake, tmp_path, *status_args) == 1
        line = one_line(capsys.readouterr().err)
        assert "does not serve rayservices.ray.io (404 on its API): install the KubeRay operator v1.7" in line
    with FakeKube() as fake:  # 409: a RayJob of that name exists (here the chart's, not the CLI's)
        install_release(fake, "phifleet", "batch")
        meta = {"name": "j1", "namespace": "batch"}
        fake.put({"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": {"entrypoint": "x"}})
        assert submit_job(fake, tmp_path, config, "j1") == 1
        line = one_line(capsys.readouterr().err)
        assert "RayJob batch/j1 already exists (409)" in line and "--name" in line
        assert job_parts(fake, "j1") == {"rayjobs"}  # its ConfigMap and policy went again; the other RayJob stays


def test_kubeconfig_comes_before_in_cluster_credentials(tmp_path, capsys, monkeypatch):
    from kubernetes import client
    from kubernetes import config as kube_config

    with FakeKube() as from_file, FakeKube() as in_cluster:

        def load_incluster_config(client_configuration: client.Configuration | None = None, **_: object) -> None:
            """The pod's account (a token file and KUBERNETES_SERVICE_HOST in a real pod): here the second fake."""
            cfg = client_configuration or client.Configuration()
            cfg.host, cfg.api_key = in_cluster.url, {"BearerToken": "Bearer fake-token"}
            if client_configuration is None:
                client.Configuration.set_default(cfg)

        monkeypatch.setattr(kube_config, "load_incluster_config", load_incluster_config)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
        monkeypatch.setenv("KUBECONFIG", str(from_file.kubeconfig(tmp_path)))
        main(["cluster", "status", "-n", "batch"])
        assert from_file.requests and not in_cluster.requests  # $KUBECONFIG wins over the pod's credentials
        monkeypatch.delenv("KUBECONFIG")
        main(["cluster", "status", "-n", "batch"])
        assert in_cluster.requests  # and the pod's credentials are used when nothing else is there
    capsys.readouterr()


def test_a_job_cluster_gets_the_releases_network_rule_and_nothing_else(tmp_path, helm):
    """Ray's Jobs API (8265) runs whatever it is sent, unauthenticated (CVE-2023-48022): the job's own policy admits
    the release's pods on every port and the KubeRay operator on the dashboard and serve port — the chart's rule, as
    templates/networkpolicy.yaml writes it for the release — and nothing else; with the release's own policy beside
    it, Ray's ports stay closed to everyone else."""
    from phifleet.cluster.kube import job_objects
    from tests.helm.netpol import Pod, admits

    job = JobConfig.model_validate(yaml.safe_load(job_file(tmp_path, "in.jsonl", tmp_path / "out").read_text()))
    objs = job_objects(job, "j1", "phifleet", release="prod")
    policy = objs.network_policy
    assert policy is not None and policy["metadata"]["labels"][JOB] == "j1"
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    spec = objs.rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    head = Pod("phifleet", cluster["headGroupSpec"]["template"]["metadata"]["labels"])
    worker = Pod("phifleet", cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"])
    submitter = Pod("phifleet", spec["submitterPodTemplate"]["metadata"]["labels"])
    release_docs = render(helm, "--set", "apiKeys.enabled=false", release="prod")
    (service,) = [d for d in release_docs if d["kind"] == "RayService"]
    serve_pod = Pod(
        "phifleet", service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    )
    operator = Pod(
        "kuberay-system", {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay"}
    )
    strangers = [
        Pod("phifleet", {"app": "anything"}),
        Pod("default", {"app.kubernetes.io/name": "phifleet", "app.kubernetes.io/instance": "prod"}),  # other ns
        Pod("phifleet", {"app.kubernetes.io/name": "phifleet", "app.kubernetes.io/instance": "other"}),  # other release
        Pod("kuberay-system", {"app": "not-the-operator"}),
    ]
    ray_ports = [6379, 8265, 10001, 10002, 52365]  # GCS, dashboard/Jobs API, client, workers, dashboard agent
    for target in (head, worker):
        for port in [*ray_ports, 8000, 8080]:
            for source in (head, worker, submitter, serve_pod):  # the release's pods: every port
                assert admits([policy], source, target, port), (source, target, port)
            # KubeRay: the Jobs API and Serve's health, on the job's pods (only the head listens there)
            assert admits([policy], operator, target, port) is (port in (8265, 8000)), (target, port)
            for stranger in strangers:
                assert not admits([policy], stranger, target, port), (stranger, target, port)
    # beside the release's own policy (which selects the job's pods too: they are the release's), Ray's ports stay
    # closed to everyone but the release and the operator's dashboard calls
    both = [policy, *(d for d in release_docs if d["kind"] == "NetworkPolicy")]
    for target in (head, worker):
        for port in ray_ports:
            for stranger in strangers:
                assert not admits(both, stranger, target, port), (stranger, target, port)


def rbac_scenarios(fake: FakeKube, tmp_path: Path) -> list[int]:
    """Every path of `cluster submit/status` that touches the API: a job followed to the end on the release's claim,
    the release's status, and a submit whose last step fails (its cleanup). Returns the exit codes."""
    from tests.cluster.fake_kube import status

    config, values = job_file(tmp_path, "in.jsonl", tmp_path / "out"), pvc_values(tmp_path)
    install_release(fake, "prod", "batch", claim="prod-phifleet-models")
    meta = {"name": "prod-phifleet", "namespace": "batch", "labels": {"app.kubernetes.io/instance": "prod"}}
    fake.put({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": meta, "spec": {}})
    fake.on_get["rayjobs"] = ScriptedOperator(fake, [RUNNING, COMPLETE])
    release = ["-f", str(values), "--release", "prod"]
    rcs = [submit_job(fake, tmp_path, config, "j1", *release, "--wait", "--poll", "0")]
    rcs.append(cli(fake, tmp_path, "cluster", "status", "--release", "prod", "-n", "batch"))
    fake.faults[("patch", "networkpolicies")] = status(500, "InternalError", "etcdserver: request timed out")
    rcs.append(submit_job(fake, tmp_path, config, "j2", *release))
    return rcs


def test_the_submitter_role_grants_exactly_what_the_cli_calls(tmp_path, capsys, helm):
    """The calls are derived, not listed: every (verb, API group, resource) the CLI sends the fake API server over
    all its paths must be granted by the chart's rendered Role, and the Role grants nothing else; without any one of
    its grants the CLI fails with one line naming that verb and resource."""
    subjects = ["--set", "submitter.subjects[0].kind=Group", "--set", "submitter.subjects[0].name=batch-users"]
    subjects += ["--set", "submitter.subjects[1].kind=ServiceAccount", "--set", "submitter.subjects[1].name=ci"]
    docs = render(helm, "--set", "submitter.rbac.create=true", "--set", "apiKeys.enabled=false", *subjects)
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    for obj in (role, binding):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "r-phifleet-submitter"
    assert binding["subjects"][1] == {"kind": "ServiceAccount", "name": "ci", "namespace": "phifleet"}
    refused = run_helm(helm, "template", "r", str(CHART), "--api-versions", "ray.io/v1", *subjects, check=False)
    assert refused.returncode != 0 and "submitter.subjects needs submitter.rbac.create" in refused.stderr
    granted = {
        (verb, group, plural)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for plural in rule["resources"]
        for verb in rule["verbs"]
    }
    with FakeKube() as fake:
        assert rbac_scenarios(fake, tmp_path) == [0, 0, 1]
        called = set(fake.requests)
    assert called == granted
    capsys.readouterr()

    with FakeKube(rules=role["rules"]) as fake:  # as a user bound to the Role: everything the CLI does works
        assert rbac_scenarios(fake, tmp_path) == [0, 0, 1]
        assert "forbidden" not in capsys.readouterr().err

    for verb, group, plural in sorted(granted):
        rules = [
            {"apiGroups": [g], "resources": [p], "verbs": [v]}
            for v, g, p in granted
            if (v, g, p) != (verb, group, plural)
        ]
        assert all(grants(rules, *call) for call in granted - {(verb, group, plural)})
        with FakeKube(rules=rules) as fake:
            rbac_scenarios(fake, tmp_path)
        err = capsys.readouterr().err
        resource = f"{plural}.{group}" if group else plural
        missing = [line for line in err.splitlines() if f'user "fake-user" may not {verb} {resource} ' in line]
        assert missing, (verb, resource, err)
        assert "Traceback" not in err
