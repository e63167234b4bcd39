"""The chart's Ray payloads, rendered by `helm template` and run on a real two-node Ray the way KubeRay runs them.

The cluster: `ray start --head --num-cpus 0` (as the chart starts a RayService's head: nothing schedules on it)
plus one `ray start --address` worker node with CPUs. Then, as KubeRay v1.7.0's controller does:
- a RayService's `serveConfigV2` is PUT to the head dashboard's Serve REST API (`/api/serve/applications/`,
  ray-operator/controllers/ray/utils/dashboardclient), polled until RUNNING and called with the `openai` client;
- a RayJob's entrypoint is submitted with Ray's `JobSubmissionClient` (what the submitter pod's `ray job submit`
  does), its config file being the rendered ConfigMap's `job.json`.
Both nodes run with the token auth KubeRay sets up for the chart's `authOptions: {mode: token}` (ray-operator
common/pod.go SetContainerTokenAuthEnvVars: `RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN` on every Ray container), and
every dashboard call carries the token as KubeRay's dashboard client sends it (`x-ray-authorization: Bearer`,
utils/dashboardclient/dashboard_httpclient.go); a call without it must be refused.
Only the Kubernetes API is not here (tests/cluster/fake_kube.py plays it where a test needs one).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from phifleet.serve.config import SERVE_RAY_ENV
from tests.helm.conftest import CHART, by_kind, render
from tests.ray_processes import kill_session_processes
from tests.serve.conftest import free_port

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
MOUNT = "/etc/phifleet/job/job.json"


def ray_cli(*args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([str(Path(sys.executable).parent / "ray"), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"ray {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[dict[str, Any]]:
    """A head with no CPUs and one worker node with two, started with Ray's own CLI; stopped by session (never
    `ray stop`, which would stop every Ray on the machine, the test session's own among them)."""
    token = secrets.token_hex(32)
    env = {**os.environ, **SERVE_RAY_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # `python` is the image's, phifleet's
    env.pop("RAY_ADDRESS", None)
    # `ray start` records its address here and a later address-less `ray.init()` joins it: put back what was there.
    current = Path("/tmp/ray/ray_current_cluster")
    before = current.read_bytes() if current.exists() else None
    gcs, dashboard = free_port(), free_port()
    head = ["start", "--head", "--port", str(gcs), "--num-cpus", "0", "--num-gpus", "0"]
    head += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard)]
    ray_cli(*head, "--disable-usage-stats", env=env)
    session = Path("/tmp/ray/session_latest").resolve().name
    try:
        ray_cli("start", "--address", f"127.0.0.1:{gcs}", "--num-cpus", "2", "--num-gpus", "0", env=env)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dashboard}", "session": session, "token": token}
    finally:
        kill_session_processes(session)
        if before is None:
            current.unlink(missing_ok=True)
        else:
            current.write_bytes(before)


def http_json(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["x-ray-authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip() else None


def test_the_cpu_examples_serve_config_deploys_like_kuberay_and_answers(helm, two_nodes):
    """values-cpu-dev.yaml's serveConfigV2, PUT as KubeRay does: RUNNING on the worker, answering the openai client.
    (Rendered as shipped before, its replica asked for a GPU the cluster lacks and never started.)"""
    port = free_port()
    docs = render(helm, "-f", str(CHART / "values-cpu-dev.yaml"), "--set", f"serve.port={port}")
    (service,) = by_kind(docs, "RayService")
    assert service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert service["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    dashboard, token = two_nodes["dashboard"], two_nodes["token"]
    for method, path in [("PUT", "/api/serve/applications/"), ("GET", "/api/jobs/"), ("POST", "/api/jobs/")]:
        with pytest.raises(urllib.error.HTTPError) as refused:  # CVE-2023-48022: no token, no code
            http_json(method, f"{dashboard}{path}", serve_config if method == "PUT" else {"entrypoint": "id"})
        assert refused.value.code == 401, (method, path)
    http_json("PUT", f"{dashboard}/api/serve/applications/", serve_config, token=token)
    try:
        deadline, status = time.monotonic() + 240, {}
        while time.monotonic() < deadline:
            apps = http_json("GET", f"{dashboard}/api/serve/applications/", token=token)["applications"]
            status = apps.get("phifleet", {})
            if status.get("status") in ("RUNNING", "DEPLOY_FAILED"):
                break
            time.sleep(2)
        assert status.get("status") == "RUNNING", json.dumps(status, indent=1)[:3000]

        # Serve's own HTTP port knows nothing of Ray's token: clients need only the endpoint's API key (none here).
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["phi4-tiny"]
        answer = client.chat.completions.create(
            model="phi4-tiny",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=8,
            extra_body={"ignore_eos": True},
        )
        assert answer.usage.completion_tokens == 8 and isinstance(answer.choices[0].message.content, str)
    finally:  # the replicas hold the worker's CPUs: free them for the job test whatever happened
        http_json("DELETE", f"{dashboard}/api/serve/applications/", token=token)


def test_the_rayjob_entrypoint_runs_through_the_job_submission_api(helm, two_nodes, tmp_path):
    """The rendered RayJob's entrypoint and its ConfigMap's job.json, submitted as KubeRay's submitter does."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path / "out"
    sets = {
        "serve.enabled": "false",
        "job.enabled": "true",
        "job.config.input.path": str(ROOT / "examples" / "reviews.jsonl"),
        "job.config.output.path": str(out),
        "job.config.engine.model": "phi4-tiny",
        "job.config.engine.dtype": "auto",
        "job.config.pool.num_gpus": "0",
        "job.config.pool.num_cpus": "1",
        "job.config.pool.max_replicas": "1",
        "job.config.pool.batch_size": "64",
    }
    flags = [a for key, value in sets.items() for a in ("--set", f"{key}={value}")]
    docs = render(helm, "-f", str(CHART / "values-cpu-dev.yaml"), *flags)
    (job,) = by_kind(docs, "RayJob")
    (configmap,) = [c for c in by_kind(docs, "ConfigMap") if "job.json" in c.get("data", {})]
    config_file = tmp_path / "job.json"
    config_file.write_text(configmap["data"]["job.json"])
    entrypoint = job["spec"]["entrypoint"]
    assert MOUNT in entrypoint
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    client = JobSubmissionClient(
        two_nodes["dashboard"], headers={"x-ray-authorization": f"Bearer {two_nodes['token']}"}
    )
    deadline = time.monotonic() + 60
    while True:  # a fresh head's job agent registers a few seconds after the dashboard answers; KubeRay retries too
        try:
            submission = client.submit_job(
                entrypoint=entrypoint.replace(MOUNT, str(config_file)),
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
            )
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    deadline = time.monotonic() + 300
    status = client.get_job_status(submission)
    while time.monotonic() < deadline and not status.is_terminal():
        time.sleep(2)
        status = client.get_job_status(submission)
    logs = client.get_job_logs(submission)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["accounted"] and manifest["counts"]["ok"] == manifest["counts"]["input"] == 300
