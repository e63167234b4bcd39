"""helm/phifleet rendered by the real helm binary and validated offline (see conftest.py for how)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from phifleet.cluster.chart_values import CHART_DIR, README_PATH, SCHEMA_PATH, readme_text, schema_text
from phifleet.jobs.config import JobConfig
from phifleet.serve.config import SERVE_RAY_ENV, ServeConfig
from tests.helm.conftest import CHART, EXAMPLES, KUBE_VERSION, by_kind, kuberay_validator, render, run_helm

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

RAY_KINDS = {"RayService", "RayJob", "RayCluster"}
# Prometheus Operator CRDs: no schema here; their shape is asserted in test_metrics_objects.
UNVALIDATED_KINDS = {"ServiceMonitor"}


def test_values_schema_and_readme_table_are_generated_from_models_and_values():
    assert SCHEMA_PATH.read_text() == schema_text(), "run: python -m phifleet.cluster.chart_values"
    values_yaml = (CHART_DIR / "values.yaml").read_text()
    assert README_PATH.read_text() == readme_text(README_PATH.read_text(), values_yaml), (
        "run: python -m phifleet.cluster.chart_values"
    )
    assert "`serve.upgradeStrategy`" in README_PATH.read_text()


@pytest.mark.parametrize("values", EXAMPLES)
def test_example_values_lint_strict(helm, values):
    # helm lint has no --api-versions: the KubeRay CRD check (a `fail`) is only logged there, lint stays clean.
    out = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(CHART / values))
    assert "0 chart(s) failed" in out.stdout and "[ERROR]" not in out.stdout and "[WARNING]" not in out.stdout


@pytest.mark.parametrize("values", EXAMPLES)
def test_rendered_objects_validate_against_kubernetes_and_kuberay_schemas(helm, values):
    docs = render(helm, "-f", str(CHART / values))
    assert docs
    for doc in docs:
        kind = doc["kind"]
        if kind in RAY_KINDS:
            errors = sorted(kuberay_validator(kind).iter_errors(doc), key=str)
            assert not errors, f"{kind}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        elif kind not in UNVALIDATED_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "r"


@pytest.mark.parametrize("values", EXAMPLES)
def test_serve_and_job_configs_in_the_objects_are_valid_phifleet_configs(helm, values):
    docs = render(helm, "-f", str(CHART / values))
    for svc in by_kind(docs, "RayService"):
        apps = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
        assert [a["import_path"] for a in apps] == ["phifleet.serve.app:build_app"]
        ServeConfig.model_validate(apps[0]["args"])
    for job in by_kind(docs, "RayJob"):
        assert job["spec"]["entrypoint"] == "python -m phifleet.jobs --config /etc/phifleet/job/job.json"
        (cm,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-job")]
        JobConfig.model_validate(json.loads(cm["data"]["job.json"]))


def cluster_specs(docs):
    for d in docs:
        if d["kind"] == "RayService":
            yield d["spec"]["rayClusterConfig"]
        elif d["kind"] == "RayJob":
            yield d["spec"]["rayClusterSpec"]


def test_gpu_scheduling_and_autoscaling(helm):
    docs = render(helm, "-f", str(CHART / "values-aks-h100.yaml"))
    (spec,) = list(cluster_specs(docs))
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    head_res = head["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in head_res["requests"] and "nvidia.com/gpu" not in head_res["limits"]
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] == 4
    pod = gpu["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"phifleet.io/pool": "gpu"}


@pytest.mark.parametrize("values", EXAMPLES)
def test_pods_run_non_root_without_privilege_and_with_phifleets_ray_settings(helm, values):
    for spec in cluster_specs(render(helm, "-f", str(CHART / values))):
        templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
        for t in templates:
            assert t["spec"]["securityContext"]["runAsNonRoot"] is True
            for c in t["spec"]["containers"] + t["spec"].get("initContainers", []):
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
                assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            env = {e["name"]: e.get("value") for e in t["spec"]["containers"][0]["env"]}
            assert {k: env.get(k) for k in SERVE_RAY_ENV} == SERVE_RAY_ENV


def test_network_policy_opens_the_serve_port_to_clients_and_the_head_to_the_operator(helm):
    docs = render(helm, "-f", str(CHART / "values-aks-h100.yaml"))
    (policy,) = by_kind(docs, "NetworkPolicy")
    rules = policy["spec"]["ingress"]
    internal = [r for r in rules if "ports" not in r]
    assert (
        len(internal) == 1 and internal[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "r"
    )
    open_to_all = sorted(p["port"] for r in rules if "ports" in r and "from" not in r for p in r["ports"])
    assert open_to_all == [8000]  # only the serve port is open to every source
    both = [r for r in rules if any("namespaceSelector" in f and "podSelector" in f for f in r.get("from", []))]
    (operator_rule,) = both
    assert [p["port"] for p in operator_rule["ports"]] == [8265, 8000]  # KubeRay's calls to the head (flows test)
    (metrics_rule,) = [r for r in rules if r.get("ports", [{}])[0].get("port") == 8080]
    assert metrics_rule["from"]  # the AKS example limits scrapers to kube-system


def test_api_keys_secret_is_mounted_and_passed_to_the_app(helm):
    docs = render(
        helm, "--set", "apiKeys.keys={sk-aaaaaaaa,sk-bbbbbbbb}", "--set", "serve.config.auth.api_keys_env=MY_KEYS"
    )
    (secret,) = by_kind(docs, "Secret")
    assert secret["stringData"]["api-keys"].split() == ["sk-aaaaaaaa", "sk-bbbbbbbb"]
    (svc,) = by_kind(docs, "RayService")
    args = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["auth"] == {"api_keys_env": "MY_KEYS", "api_keys_file": "/etc/phifleet/secrets/api-keys"}
    worker = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
    assert mounts["api-keys"] == "/etc/phifleet/secrets"
    (test_pod,) = by_kind(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/v1/models" in test_pod["spec"]["containers"][0]["args"][0]


def test_workload_identity_and_model_volume(helm):
    docs = render(helm, "-f", str(CHART / "values-aks-h100.yaml"))
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
    (svc,) = by_kind(docs, "RayService")
    worker = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    assert worker["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert worker["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in worker["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    (init,) = worker["spec"]["initContainers"]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert "python -m phifleet.cluster.weights" in init["args"][0] and "&&" not in init["args"][0]
    assert env["PHIFLEET_WEIGHTS_SOURCE"].startswith("abfs://models@")
    assert env["PHIFLEET_WEIGHTS_DEST"] == "/models/phi-4"
    assert env["AZURE_STORAGE_ANON"] == "false"  # else adlfs is anonymous and never uses the workload identity
    head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert "initContainers" not in head  # a RayService's head loads no model: it fetches none


def test_metrics_objects(helm):
    docs = render(helm, "-f", str(CHART / "values-aks-h100.yaml"))
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (metrics_svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    # AKS managed Prometheus reads only azmonitoring.coreos.com (tests/infra/test_aks_example_names.py checks the CRD).
    assert monitor["apiVersion"] == "azmonitoring.coreos.com/v1"
    plain = render(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "apiKeys.existingSecret=k")
    (default,) = by_kind(plain, "ServiceMonitor")
    assert default["apiVersion"] == "monitoring.coreos.com/v1" and "labelLimit" not in default["spec"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_svc["metadata"]["labels"].items()
    assert metrics_svc["spec"]["clusterIP"] == "None"
    (dashboard,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    exprs = [t["expr"] for p in json.loads(dashboard["data"]["phifleet.json"])["panels"] for t in p["targets"]]
    assert any("ray_phifleet_requests_total" in e for e in exprs)


def test_api_keys_come_from_a_secret_or_values_never_from_a_render(helm):
    """Before, with no keys given the chart generated one, kept across upgrades through `lookup`: under `helm
    template` (Argo CD, Flux) there is no cluster to look up, so the key changed on every render. Now rendering
    fails, naming the fields, until an existing Secret or keys are given; the rendered objects are then stable."""
    proc = run_helm(helm, "lint", "--strict", str(CHART), check=False)
    assert proc.returncode != 0 and "apiKeys.enabled needs apiKeys.existingSecret" in proc.stdout + proc.stderr
    out = run_helm(helm, "lint", "--strict", str(CHART), "--set", "apiKeys.existingSecret=phifleet-api-keys")
    assert "0 chart(s) failed" in out.stdout and "[WARNING]" not in out.stdout
    existing = render(helm, "--set", "apiKeys.existingSecret=phifleet-api-keys")
    assert by_kind(existing, "Secret") == [] and existing == render(
        helm, "--set", "apiKeys.existingSecret=phifleet-api-keys"
    )
    (svc,) = by_kind(existing, "RayService")
    worker = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert {"name": "api-keys", "secret": {"secretName": "phifleet-api-keys", "defaultMode": 0o440}} in worker[
        "volumes"
    ]
    given = ["--set", "apiKeys.keys={sk-aaaaaaaa}"]
    assert render(helm, *given) == render(helm, *given)


def test_rendering_without_kuberay_crds_fails_with_install_instructions(helm):
    args = ["template", "r", str(CHART), "--set", "apiKeys.keys={sk-aaaaaaaa}"]
    proc = run_helm(helm, *args, check=False)
    assert proc.returncode != 0 and "install the KubeRay operator" in proc.stderr
    assert run_helm(helm, *args, "--set", "kuberay.checkCRDs=false").returncode == 0


def test_upgrading_model_or_replicas_updates_the_same_rayservice(helm):
    """`helm upgrade` patches objects by name: a model or replica change must keep every name, and change
    only the RayService's serve config (KubeRay then updates the Serve app in place or rolls a new cluster,
    per upgradeStrategy)."""
    base = ["-f", str(CHART / "values-cpu-dev.yaml")]
    before = render(helm, *base)
    after = render(
        helm,
        *base,
        "--set",
        "serve.config.deployment.autoscaling.max_replicas=3",
        "--set",
        "serve.config.engine.served_model_name=tiny2",
    )
    assert [(d["kind"], d["metadata"]["name"]) for d in before] == [(d["kind"], d["metadata"]["name"]) for d in after]
    changed = [d["kind"] for d, e in zip(before, after, strict=True) if d != e]
    assert changed == ["RayService"]
    (svc,) = by_kind(after, "RayService")
    assert svc["spec"]["upgradeStrategy"]["type"] == "None"
    args = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["deployment"]["autoscaling"]["max_replicas"] == 3 and args["engine"]["served_model_name"] == "tiny2"


BAD_VALUES = [
    (["--set", "gpuWorkers.minReplicas=-1"], "gpuWorkers/minReplicas"),
    (["--set", "gpuWorkers.maxReplicas=1", "--set", "gpuWorkers.minReplicas=2"], "gpuWorkers.maxReplicas"),
    (
        ["--set", "serve.config.deployment.autoscaling.min_replicas=5"],
        "serve.config.deployment.autoscaling.max_replicas",
    ),
    (["--set", "job.config.pool.min_replicas=9"], "job.config.pool.max_replicas"),
    (["--set", "serve.config.engine.dtyp=bfloat16"], "dtyp"),
    (["--set", "serve.config.deployment.num_gpus=lots"], "serve/config/deployment/num_gpus"),
    (["--set", "serve.config.model_name=phi-4"], "model_name"),
    (["--set", "serve.upgradeStrategy=Rolling"], "serve/upgradeStrategy"),
    (["--set", "replicaCount=2"], "replicaCount"),
    (["--set", "model.volume=nfs"], "model/volume"),
    (["--set", "job.config.task.kind=translate"], "job/config/task"),
    (["--set", "serve.port=0"], "serve/port"),
    (["--set", "workloadIdentity.enabled=true"], "workloadIdentity.enabled needs"),
    (["--set", "gpuWorkers.enabled=false"], "no worker group"),
    (
        ["--set", "model.fetch.source=abfs://m@a.dfs.core.windows.net/phi-4", "--set", "model.volume=none"],
        "needs a model volume",
    ),
    (
        ["--set", "model.fetch.source=abfs://m@a.dfs.core.windows.net/phi-4", "--set", "model.fetch.path=phi-4-r2"],
        "serve.config.engine.model (/models/phi-4) must be /models/phi-4-r2",
    ),
    (["--set", "model.fetch.path=../etc"], "model/fetch/path"),
    (["--set", "model.downloadCommand=true"], "downloadCommand"),
    # What KubeRay v1.7.0's controller refuses (validation.go), and knobs it no longer reads (kuberay#1685).
    (
        ["--set", "serve.upgradeStrategy=NewClusterWithIncrementalUpgrade"],
        "needs serve.clusterUpgradeOptions.gatewayClassName",
    ),
    (
        [
            "--set",
            "serve.upgradeStrategy=NewClusterWithIncrementalUpgrade",
            "--set",
            "serve.clusterUpgradeOptions.gatewayClassName=istio",
            "--set",
            "serve.clusterUpgradeOptions.maxSurgePercent=10",
        ],
        "stepSizePercent (25) must be <= serve.clusterUpgradeOptions.maxSurgePercent (10)",
    ),
    (
        ["--set", "job.enabled=true", "--set", "job.shutdownAfterJobFinishes=false"],
        "job.ttlSecondsAfterFinished must be 0",
    ),
    (["--set", "serve.deploymentUnhealthySecondThreshold=300"], "deploymentUnhealthySecondThreshold"),
    (["--set", "rayVersion=2.51.0"], "rayAuth.mode token needs rayVersion >= 2.52.0"),
    (["--set", "rayAuth.mode=basic"], "rayAuth/mode"),
    (["--set", "head.gcsFaultTolerance.enabled=true"], "head.gcsFaultTolerance.enabled needs"),
    (["--set", "head.gcsFaultTolerance.redisAddress=redis://a/b:1"], "head/gcsFaultTolerance/redisAddress"),
    (
        [
            "--set",
            "head.gcsFaultTolerance.enabled=true",
            "--set",
            "head.gcsFaultTolerance.redisAddress=r:6379",
            "--set",
            "head.rayStartParams.redis-password=x",
        ],
        "head.rayStartParams.redis-password cannot be set",
    ),
    (
        ["--set", "extraEnv[0].name=RAY_REDIS_ADDRESS", "--set", "extraEnv[0].value=r:6379"],
        "extraEnv RAY_REDIS_ADDRESS",
    ),
    # Replicas the worker groups can never hold (the app would wait for resources forever).
    (
        ["--set", "serve.config.deployment.autoscaling.max_replicas=5"],
        "serve.config.deployment asks for up to 5 replicas of 1 GPU / 4 CPU, but the enabled worker groups hold at most 4",  # noqa: E501
    ),
    (
        ["--set", "gpuWorkers.resources.limits.cpu=3", "--set", "gpuWorkers.resources.requests.cpu=3"],
        "hold at most 0",  # a 4-CPU replica never fits a 3-CPU worker, whatever its GPU
    ),
    (
        ["--set", "gpuWorkers.gpus=2", "--set", "gpuWorkers.maxReplicas=1"],
        "hold at most 2",  # two GPUs per pod, one pod: two replicas, not four
    ),
    (
        ["--set", "serve.enabled=false", "--set", "job.enabled=true", "--set", "job.config.pool.max_replicas=6"],
        "job.config.pool asks for up to 6 replicas",
    ),
]


@pytest.mark.parametrize(("args", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_bad_values_fail_lint_naming_the_field(helm, args, field):
    base = ["lint", "--strict", str(CHART), "--set", "apiKeys.keys={sk-aaaaaaaa}"]
    proc = run_helm(helm, *base, *args, check=False)
    assert proc.returncode != 0
    assert field in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def fetch_containers(helm: str, mount: Path, source: str, kind: str) -> tuple[list[dict], list[dict]]:
    """(head's, workers') init containers of the RayService or RayJob, model on an emptyDir at ``mount``."""
    sets = [
        f"model.mountPath={mount}",
        f"model.fetch.source={source}",
        "model.fetch.revision=r1",
        "apiKeys.keys={sk-aaaaaaaa}",
    ]
    sets += [f"serve.config.engine.model={mount}/phi-4", f"job.config.engine.model={mount}/phi-4"]
    if kind == "RayJob":
        sets += ["serve.enabled=false", "job.enabled=true"]
    docs = render(helm, *[a for s in sets for a in ("--set", s)])
    (obj,) = by_kind(docs, kind)
    cluster = obj["spec"]["rayClusterConfig" if kind == "RayService" else "rayClusterSpec"]
    workers = [c for g in cluster["workerGroupSpecs"] for c in g["template"]["spec"].get("initContainers", [])]
    return cluster["headGroupSpec"]["template"]["spec"].get("initContainers", []), workers


def run_init(container: dict, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The init container's own command (`/bin/sh -c <script>`) with its own env, `python` being this venv's."""
    assert container["command"] == ["/bin/sh", "-c"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **extra_env}
    return subprocess.run(["/bin/sh", "-c", container["args"][0]], env=env, capture_output=True, text=True)


def test_the_rendered_weights_fetch_fails_closed_in_sh(helm, tmp_path):
    """The script as rendered, run in `sh`: a failing fetch exits non-zero and marks nothing (the old script ran
    `azcopy login && azcopy copy` under `set -e`, which a failed login does not stop, then touched `.complete`)."""
    mount = tmp_path / "models"
    env = {"OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    head, (init, *_) = fetch_containers(helm, mount, f"file://{tmp_path}/missing", "RayService")
    assert head == []  # a RayService's head loads no model
    failed = run_init(init, env)
    assert failed.returncode != 0 and "is not a folder" in failed.stderr
    assert not list(mount.rglob(".phifleet-weights.json"))

    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "SHA256SUMS").write_text(f"{'0' * 64}  config.json\n")  # a wrong sum: refused
    _, (init, *_) = fetch_containers(helm, mount, f"file://{source}", "RayService")
    assert run_init(init, env).returncode != 0 and not (mount / "phi-4").exists()
    (source / "SHA256SUMS").unlink()
    done = run_init(init, env)
    assert done.returncode == 0, done.stderr
    assert json.loads((mount / "phi-4" / ".phifleet-weights.json").read_text())["revision"] == "r1"
    assert "present" in run_init(init, env).stdout

    job_head, job_workers = fetch_containers(helm, mount, f"file://{source}", "RayJob")
    assert len(job_head) == 1 and job_workers  # a RayJob's driver runs on the head and reads the model's config


# The flows a release needs (KubeRay v1.7.0 and Ray's docs): (who, to, port, admitted). Targets are Ray pods of the
# release; "head" is the head pod. The operator reaches the dashboard through the head Service and Serve's health
# endpoint on the head pod (ray-operator utils/util.go FetchHeadServiceURL, rayservice_controller.go
# checkIfNeedSubmitServeApplications/updateHeadPodServeLabel); Ray's nodes talk to each other on every port.
OPERATOR = ("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay"})
STRANGER = ("default", {"app": "anything"})
FLOWS = [
    ("operator", "head", 8265, True),  # PUT/GET /api/serve/applications/, the Jobs API
    ("operator", "head", "serve", True),  # GET /-/healthz on the head's Serve proxy
    ("operator", "head", 6379, False),
    ("release", "head", 6379, True),  # GCS
    ("release", "head", 8265, True),
    ("release", "worker", 10002, True),  # node manager, object manager, worker ports
    ("stranger", "head", 8265, False),  # Ray's Jobs API runs code: never from outside (CVE-2023-48022)
    ("stranger", "head", 6379, False),
    ("stranger", "head", 10001, False),
    ("stranger", "worker", 10002, False),
]


@pytest.mark.parametrize("values", EXAMPLES)
def test_network_policies_admit_exactly_the_flows_ray_and_kuberay_need(helm, values):
    from tests.helm.netpol import Pod, admits

    docs = render(helm, "-f", str(CHART / values))
    policies = by_kind(docs, "NetworkPolicy")
    if not policies:
        pytest.skip(f"{values} renders no NetworkPolicy")
    chart_values = yaml.safe_load((CHART / values).read_text()) or {}
    serve_port = (chart_values.get("serve") or {}).get("port", 8000)
    (workload,) = by_kind(docs, "RayService") or by_kind(docs, "RayJob")
    cluster = workload["spec"].get("rayClusterConfig") or workload["spec"]["rayClusterSpec"]
    targets = {
        "head": Pod("phifleet", cluster["headGroupSpec"]["template"]["metadata"]["labels"]),
        "worker": Pod("phifleet", cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"]),
    }
    sources = {"operator": Pod(*OPERATOR), "release": targets["worker"], "stranger": Pod(*STRANGER)}
    for who, to, port, expected in FLOWS:
        number = serve_port if port == "serve" else port
        assert admits(policies, sources[who], targets[to], number) is expected, (who, to, port)
    clients = ((chart_values.get("networkPolicy") or {}).get("clients")) or []
    assert admits(policies, sources["stranger"], targets["head"], serve_port) is (not clients)


def test_incremental_upgrade_renders_the_options_kuberay_requires(helm):
    docs = render(
        helm,
        "--set",
        "apiKeys.existingSecret=k",
        "--set",
        "serve.upgradeStrategy=NewClusterWithIncrementalUpgrade",
        "--set",
        "serve.clusterUpgradeOptions.gatewayClassName=istio",
    )
    (svc,) = by_kind(docs, "RayService")
    assert svc["spec"]["upgradeStrategy"] == {
        "type": "NewClusterWithIncrementalUpgrade",
        "clusterUpgradeOptions": {
            "gatewayClassName": "istio",
            "stepSizePercent": 25,
            "intervalSeconds": 60,
            "maxSurgePercent": 100,
        },
    }
    kuberay_validator("RayService").validate(svc)
    assert "deploymentUnhealthySecondThreshold" not in svc["spec"]


def test_head_resilience_and_ray_token_auth_render_as_kuberay_reads_them(helm):
    """Finding 6: the head is no longer a single point of failure by default. Every Ray cluster of the release runs
    with KubeRay's token auth (its dashboard and Jobs API refuse callers without the token: CVE-2023-48022, checked on
    a real Ray in tests/cluster/test_payloads_on_ray.py), the heads have a PDB, and GCS fault tolerance renders
    KubeRay's gcsFaultToleranceOptions with the password from a Secret. Validated against KubeRay's CRD schemas."""
    sets = ["apiKeys.existingSecret=k", "job.enabled=true", "head.gcsFaultTolerance.enabled=true"]
    sets += ["head.gcsFaultTolerance.redisAddress=rediss://phifleet.redis.cache.windows.net:6380"]
    sets += ["head.gcsFaultTolerance.redisPasswordSecret.name=phifleet-redis"]
    docs = render(helm, *[a for s in sets for a in ("--set", s)])
    specs = [
        by_kind(docs, "RayService")[0]["spec"]["rayClusterConfig"],
        by_kind(docs, "RayJob")[0]["spec"]["rayClusterSpec"],
    ]
    for spec in specs:
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["gcsFaultToleranceOptions"] == {
            "redisAddress": "rediss://phifleet.redis.cache.windows.net:6380",
            "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "phifleet-redis", "key": "password"}}},
        }
    for doc in by_kind(docs, "RayService") + by_kind(docs, "RayJob"):
        errors = [e.message for e in kuberay_validator(doc["kind"]).iter_errors(doc)]
        assert errors == [], errors
    pdbs = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "PodDisruptionBudget")}
    head_pdb = pdbs["r-phifleet-head"]
    assert head_pdb["maxUnavailable"] == 0
    heads = [spec["headGroupSpec"]["template"]["metadata"]["labels"] for spec in specs]
    assert all(head_pdb["selector"]["matchLabels"].items() <= labels.items() for labels in heads)
    workers = [g["template"]["metadata"]["labels"] for spec in specs for g in spec["workerGroupSpecs"]]
    assert not any(head_pdb["selector"]["matchLabels"].items() <= labels.items() for labels in workers)

    plain = render(
        helm, "--set", "apiKeys.existingSecret=k", "--set", "rayAuth.mode=disabled", "--set", "head.pdb.enabled=false"
    )
    (spec,) = [s["spec"]["rayClusterConfig"] for s in by_kind(plain, "RayService")]
    assert "authOptions" not in spec and "gcsFaultToleranceOptions" not in spec
    assert [p["metadata"]["name"] for p in by_kind(plain, "PodDisruptionBudget")] == ["r-phifleet-serve"]
