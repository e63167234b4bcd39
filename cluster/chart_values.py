"""The Helm chart's values, tied to phifleet's config models so chart and code never drift.

- `values_schema()` is helm/phifleet/values.schema.json: the chart's own knobs written here, with `serve.config`
  and `job.config` taken from ServeConfig's and JobConfig's pydantic JSON schemas (unknown keys rejected
  everywhere, so `helm lint --strict` names a misspelt field). `python -m phifleet.cluster.chart_values` rewrites
  the file; a test fails when the committed file differs.
- `chart_values()` turns a serve and/or job config into the values overrides `phifleet cluster render` prints.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from phifleet.cluster.weights import FetchConfig
from phifleet.helm import CHART_DIR
from phifleet.jobs.config import JobConfig
from phifleet.serve.config import SERVE_RAY_ENV, ServeConfig

SCHEMA_PATH = CHART_DIR / "values.schema.json"
README_PATH = CHART_DIR / "README.md"
TABLE_START, TABLE_END = "<!-- values-table:start -->", "<!-- values-table:end -->"
UPGRADE_STRATEGIES = ["NewCluster", "None", "NewClusterWithIncrementalUpgrade"]
SUBMISSION_MODES = ["K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode"]
MODEL_VOLUMES = ["pvc", "hostPath", "emptyDir", "none"]

Schema = dict[str, Any]


def obj(properties: dict[str, Schema], required: list[str] | None = None, description: str = "") -> Schema:
    out: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


def string(description: str = "", **kw: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **kw}


def integer(minimum: int = 0, **kw: Any) -> Schema:
    return {"type": "integer", "minimum": minimum, **kw}


BOOL: Schema = {"type": "boolean"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_MAP: Schema = {"type": "object"}  # Kubernetes objects (affinity, securityContext): the API server validates
LIST_OF_OBJECTS: Schema = {"type": "array", "items": {"type": "object"}}
QUANTITY: Schema = {"type": ["string", "integer", "number"]}
RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    },
    required=["requests", "limits"],
)
TOLERATIONS: Schema = {
    "type": "array",
    "items": obj(
        {
            "key": string(),
            "operator": {"enum": ["Equal", "Exists"]},
            "value": string(),
            "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute", ""]},
            "tolerationSeconds": {"type": "integer"},
        }
    ),
}


def scheduling() -> dict[str, Schema]:
    return {"nodeSelector": STRING_MAP, "tolerations": TOLERATIONS, "affinity": ANY_MAP}


def worker_group(extra: dict[str, Schema] | None = None) -> Schema:
    return obj(
        {
            "enabled": BOOL,
            "groupName": string(pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
            "replicas": integer(),
            "minReplicas": integer(),
            "maxReplicas": integer(1),
            "resources": RESOURCES,
            "rayStartParams": STRING_MAP,
            **scheduling(),
            **(extra or {}),
        },
        required=["groupName", "replicas", "minReplicas", "maxReplicas", "resources"],
    )


def _hoist(model_schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Move a pydantic schema's $defs to the root (refs are '#/$defs/...' relative to the document root)."""
    for name, sub in model_schema.pop("$defs", {}).items():
        if name in defs and defs[name] != sub:
            raise ValueError(f"two config models define {name} differently")
        defs[name] = sub
    return model_schema


def values_schema() -> Schema:
    defs: dict[str, Schema] = {}
    serve_config = _hoist(ServeConfig.model_json_schema(), defs)
    job_config = _hoist(JobConfig.model_json_schema(), defs)
    fetch_config = _hoist(FetchConfig.model_json_schema(), defs)
    pos_seconds = integer(1)
    props: dict[str, Schema] = {
        "nameOverride": string(),
        "fullnameOverride": string(maxLength=40),
        "image": obj(
            {
                "repository": string(minLength=1),
                "tag": string(),
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            },
            required=["repository"],
        ),
        "imagePullSecrets": LIST_OF_OBJECTS,
        "kuberay": obj({"checkCRDs": BOOL}),
        "rayVersion": string(pattern=r"^\d+\.\d+\.\d+$"),
        "rayEnv": STRING_MAP,
        "extraEnv": LIST_OF_OBJECTS,
        "serviceAccount": obj({"create": BOOL, "name": string(), "annotations": STRING_MAP}),
        "workloadIdentity": obj({"enabled": BOOL, "clientId": string()}),
        "apiKeys": obj(
            {
                "enabled": BOOL,
                "existingSecret": string(),
                "secretKey": string(minLength=1),
                "keys": {"type": "array", "items": string(minLength=8)},
            }
        ),
        "model": obj(
            {
                "volume": {"enum": MODEL_VOLUMES},
                "mountPath": string(pattern="^/"),
                "pvc": obj(
                    {
                        "existingClaim": string(),
                        "size": string(pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$"),
                        "storageClassName": string(),
                        "accessModes": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]},
                        },
                    }
                ),
                "hostPath": string(pattern="^/"),
                "emptyDirSizeLimit": string(pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$"),
                "fetch": fetch_config,
            }
        ),
        "podSecurityContext": ANY_MAP,
        "securityContext": ANY_MAP,
        "rayAuth": obj({"mode": {"enum": ["token", "disabled"]}}),
        "head": obj(
            {
                "rayStartParams": STRING_MAP,
                "resources": RESOURCES,
                **scheduling(),
                "pdb": obj({"enabled": BOOL}),
                "gcsFaultTolerance": obj(
                    {
                        "enabled": BOOL,
                        "redisAddress": string(pattern=r"^$|^(rediss?://)?[^\s/:]+:[0-9]+$"),
                        "redisPasswordSecret": obj({"name": string(), "key": string(minLength=1)}),
                    }
                ),
            }
        ),
        "gpuWorkers": worker_group({"gpus": integer(1), "gpuResource": string(minLength=1)}),
        "cpuWorkers": worker_group(),
        "autoscaler": obj(
            {
                "enabled": BOOL,
                "idleTimeoutSeconds": integer(),
                "upscalingMode": {"enum": ["Conservative", "Default", "Aggressive"]},
                "resources": RESOURCES,
            }
        ),
        "serve": obj(
            {
                "enabled": BOOL,
                "config": serve_config,
                "upgradeStrategy": {"enum": UPGRADE_STRATEGIES},
                "port": integer(1, maximum=65535),
                "clusterUpgradeOptions": obj(
                    {
                        "gatewayClassName": string(),
                        "stepSizePercent": integer(1, maximum=100),
                        "intervalSeconds": integer(1),
                        "maxSurgePercent": integer(0, maximum=100),
                    }
                ),
                "pdb": obj({"enabled": BOOL, "maxUnavailable": {"type": ["integer", "string"]}}),
                "ingress": obj(
                    {
                        "enabled": BOOL,
                        "className": string(),
                        "annotations": STRING_MAP,
                        "hosts": {"type": "array", "items": string(minLength=1)},
                        "tls": LIST_OF_OBJECTS,
                    }
                ),
            }
        ),
        "networkPolicy": obj(
            {
                "enabled": BOOL,
                "clients": LIST_OF_OBJECTS,
                "metricsScrapers": LIST_OF_OBJECTS,
                "kuberayOperator": obj({"namespace": string(minLength=1), "podLabels": STRING_MAP}),
            }
        ),
        "metrics": obj(
            {
                "serviceMonitor": obj(
                    {
                        "enabled": BOOL,
                        "apiVersion": {"enum": ["monitoring.coreos.com/v1", "azmonitoring.coreos.com/v1"]},
                        "interval": string(pattern=r"^[0-9]+(s|m)$"),
                        "labels": STRING_MAP,
                    }
                ),
                "grafanaDashboard": obj({"enabled": BOOL, "labels": STRING_MAP}),
            }
        ),
        "job": obj(
            {
                "enabled": BOOL,
                "config": job_config,
                "shutdownAfterJobFinishes": BOOL,
                "ttlSecondsAfterFinished": integer(),
                "backoffLimit": integer(),
                "activeDeadlineSeconds": pos_seconds,
                "submissionMode": {"enum": SUBMISSION_MODES},
            }
        ),
        "tests": obj({"image": string()}),
        "submitter": obj(
            {
                "rbac": obj({"create": BOOL}),
                "subjects": {
                    "type": "array",
                    "items": obj(
                        {
                            "kind": {"enum": ["User", "Group", "ServiceAccount"]},
                            "name": string(minLength=1),
                            "namespace": string(),
                        },
                        required=["kind", "name"],
                    ),
                },
            }
        ),
        "global": ANY_MAP,  # Helm passes parent charts' globals to every chart
    }
    schema = obj(props, description="phifleet chart values (generated by `python -m phifleet.cluster.chart_values`)")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "$defs": dict(sorted(defs.items()))}
    return schema


def schema_text() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=False) + "\n"


def values_table(values_yaml: str) -> str:
    """The helm-docs table: every key preceded by a `# --` comment, with its default (or `@default --` text)."""
    import yaml

    data = yaml.safe_load(values_yaml)
    rows, stack, comment, default_text = [], [], [], None
    for line in values_yaml.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("# --"):
            comment, default_text = [stripped[4:].strip()], None
            continue
        if stripped.startswith("# @default --"):
            default_text = stripped[len("# @default --") :].strip()
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped[1:].strip())
            continue
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        key = stripped.split(":", 1)[0].strip().strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment:
            path = [k for _, k in stack]
            value: Any = data
            for k in path:
                value = value[k]
            shown = default_text or f"`{json.dumps(value)}`"
            rows.append(f"| `{'.'.join(path)}` | {shown} | {' '.join(comment)} |")
            comment, default_text = [], None
    return "\n".join(["| key | default | description |", "|---|---|---|", *rows])


def readme_text(readme: str, values_yaml: str) -> str:
    start, end = readme.index(TABLE_START) + len(TABLE_START), readme.index(TABLE_END)
    return readme[:start] + "\n" + values_table(values_yaml) + "\n" + readme[end:]


def replacing(default: Any, new: Any) -> Any:
    """`new` as a Helm override that replaces `default` instead of merging into it: Helm merges maps key by key,
    so every key only the chart's default has is set to null (which deletes it)."""
    if not isinstance(default, dict) or not isinstance(new, dict):
        return new
    out = {k: replacing(default.get(k), v) for k, v in new.items()}
    out.update({k: None for k in default if k not in new})
    return out


def chart_values(serve: ServeConfig | None = None, job: JobConfig | None = None) -> dict[str, Any]:
    """Values overrides that run exactly these configs: what `phifleet cluster render` prints for `helm -f`."""
    import yaml

    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    values: dict[str, Any] = {"rayEnv": dict(SERVE_RAY_ENV)}
    values["serve"] = {"enabled": serve is not None}
    if serve is not None:
        values["serve"]["config"] = replacing(defaults["serve"]["config"], serve.model_dump(mode="json"))
    values["job"] = {"enabled": job is not None}
    if job is not None:
        data = job.model_dump(mode="json", exclude={"address"})  # the RayJob's driver runs on its own cluster
        values["job"]["config"] = replacing(defaults["job"]["config"], data)
    gpus = max(serve.deployment.num_gpus if serve else 0, job.pool.num_gpus if job else 0)
    if gpus == 0:  # a CPU-only config (the tiny model): CPU workers instead of the GPU group
        values["gpuWorkers"] = {"enabled": False}
        values["cpuWorkers"] = {"enabled": True}
    else:
        values["gpuWorkers"] = {"enabled": True, "gpus": max(1, int(gpus))}
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description="Write (or --check) the chart's values.schema.json and README table.")
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = ap.parse_args()
    values_yaml = (CHART_DIR / "values.yaml").read_text()
    targets = {SCHEMA_PATH: schema_text(), README_PATH: readme_text(README_PATH.read_text(), values_yaml)}
    for path, text in targets.items():
        if args.check:
            if path.read_text() != text:
                raise SystemExit(f"{path} is out of date: run python -m phifleet.cluster.chart_values")
            continue
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
