"""`helm template` of helm/phifleet: the one definition of phifleet's Kubernetes objects.

`phifleet cluster submit` renders the chart rather than building a RayJob in Python, so a job submitted from the
CLI has exactly the pods, security settings and scheduling the chart gives an installed release.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from phifleet.helm import CHART_DIR as DEFAULT_CHART

# A checkout's pinned helm (scripts/install_helm.py); absent in an installed wheel, where PATH or PHIFLEET_HELM serve.
CHECKOUT_HELM = Path(__file__).resolve().parents[1] / ".tools" / "bin" / "helm"


class HelmError(RuntimeError):
    pass


def helm_binary() -> str:
    """helm on PATH, else the pinned one scripts/install_helm.py puts in .tools/bin."""
    for candidate in (os.environ.get("PHIFLEET_HELM"), shutil.which("helm"), CHECKOUT_HELM):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise HelmError("helm not found: put helm 3 on PATH or run scripts/install_helm.py")


def template(
    values: list[dict[str, Any]],
    release: str,
    namespace: str,
    chart: Path = DEFAULT_CHART,
    value_files: list[Path] | None = None,
) -> list[dict[str, Any]]:
    """Objects the chart renders for these values (files first, then the dicts, later ones winning)."""
    if not (chart / "Chart.yaml").exists():
        raise HelmError(f"no chart at {chart}: pass --chart")
    with tempfile.TemporaryDirectory() as tmp:
        args = [helm_binary(), "template", release, str(chart), "--namespace", namespace]
        args += ["--api-versions", "ray.io/v1"]  # the caller checks the CRDs against the live cluster
        for f in value_files or []:
            args += ["-f", str(f)]
        for i, v in enumerate(values):
            path = Path(tmp) / f"values-{i}.yaml"
            path.write_text(yaml.safe_dump(v))
            args += ["-f", str(path)]
        proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HelmError(proc.stderr.strip() or proc.stdout.strip())
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
