"""`phifleet.helm`: the Helm chart and the KubeRay schemas it is checked against, shipped as package data.

Found through this file, so a checkout (editable install) and an installed wheel resolve them the same way.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
CHART_DIR = HERE / "phifleet"
KUBERAY_VERSION = "v1.7.0"
KUBERAY_SCHEMAS_DIR = HERE / "schemas" / f"kuberay-{KUBERAY_VERSION}"
