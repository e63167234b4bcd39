"""`phifleet cluster render|submit|status` with the real kubernetes client against an in-process fake API server
(tests/cluster/fake_kube.py: no API server can run here). The fake's "operator" runs a submitted RayJob's
entrypoint for real (`python -m phifleet.jobs` on a local Ray with phi4-tiny), from the ConfigMap the CLI created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from phifleet.cluster.cli import main
from phifleet.jobs.config import JobConfig
from phifleet.serve.config import ServeConfig
from tests.cluster.fake_kube import FakeKube
from tests.helm.conftest import CHART, render

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
            cm = self.fake.objects.get(("configmaps", ns, f"{name}-job"))
            if cm is None:  # the head pod would wait for its ConfigMap volume
                job["status"] = {"jobDeploymentStatus": "Initializing"}
                return
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


def test_submit_wait_runs_the_chart_rayjob_to_completion(tmp_path, capsys, tiny_dir):
    config = job_file(tmp_path, str(ROOT / "examples" / "reviews.jsonl"), tmp_path / "out")
    with FakeKube() as fake:
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

        # the same name again: a clear conflict, nothing replaced
        assert main(base) == 1
        assert "already exists" in capsys.readouterr().err


def test_a_failing_job_fails_the_command_with_its_message(tmp_path, capsys):
    config = job_file(tmp_path, str(tmp_path / "missing.jsonl"), tmp_path / "out")
    with FakeKube() as fake:
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
    rayjob, config_map = yaml.safe_load_all(capsys.readouterr().out)
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert head["metadata"]["labels"]["azure.workload.identity/use"] == "true"
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
