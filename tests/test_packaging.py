"""The wheel a user installs: one import root, the chart inside, and a CLI that works outside the checkout.

Builds the real wheel with setuptools, installs it with pip into a fresh virtualenv in a temporary folder and
runs the console script from there. The fresh venv gets the project's already-installed dependencies through a
path entry (not a site dir, so the checkout's editable-install hook is not activated there): installing torch
and Ray again would take minutes and prove nothing about phifleet's own packaging.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the source: setuptools' build/ leftovers in the checkout could leak into a wheel."""
    src = tmp_path_factory.mktemp("src") / "phifleet"
    junk = shutil.ignore_patterns(".git", ".venv", ".tools", "build", "dist", "out", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, src, ignore=junk)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    (whl,) = out.glob("phifleet-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin directory."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)  # pip from the interpreter's bundled wheel: no network
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # The project's dependencies (this interpreter's site-packages) as a plain path entry, after the venv's own.
    (purelib / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, text=True)
    return env_dir / "bin"


def run(bin_dir: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PHIFLEET_HELM"] = str(ROOT / ".tools" / "bin" / "helm")
    proc = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_wheel_has_one_top_level_package_and_carries_the_chart(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/", 1)[0] for n in names} == {"phifleet", f"phifleet-{wheel.name.split('-')[1]}.dist-info"}
    for needed in (
        "phifleet/helm/phifleet/Chart.yaml",
        "phifleet/helm/phifleet/values.schema.json",
        "phifleet/helm/phifleet/templates/rayservice.yaml",
        "phifleet/helm/phifleet/.helmignore",
        "phifleet/helm/schemas/kuberay-v1.7.0/rayjob-v1.json",
        "phifleet/engine/engine.py",
        "phifleet/protocol/errors.py",
        "phifleet/jobs/kinds/label.py",
        "phifleet/jobs/stages/replica.py",
        "phifleet/engine/tiny/phi4-tiny-v3/model.safetensors",
        "phifleet/engine/tiny/phi4-tiny-v3/tokenizer.json",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "phifleet = phifleet.cluster.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_imports_phifleet_only(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, phifleet, phifleet.engine, phifleet.protocol, phifleet.jobs, phifleet.serve,"
        " phifleet.cluster, phifleet.helm;"
        "print(json.dumps({'file': phifleet.__file__, 'version': phifleet.__version__, 'generic': [m for m in"
        " ('engine', 'protocol', 'jobs', 'serve', 'cluster', 'helm') if importlib.util.find_spec(m)]}))"
    )
    out = json.loads(run(installed, "python", "-c", probe, cwd=tmp_path).stdout)
    assert out["file"].startswith(str(installed.parent)), out  # the wheel's copy, not the checkout
    assert out["generic"] == []  # `import engine` fails: nothing generic in site-packages
    assert run(installed, "phifleet", "--version", cwd=tmp_path).stdout.strip().endswith(out["version"])
    # The default model resolves to the copy inside the installed package, intact.
    info = json.loads(run(installed, "phifleet", "model", "info", cwd=tmp_path).stdout)
    assert info["path"].startswith(str(installed.parent)) and info["phi4_tiny"]["version"] >= 2


def test_installed_cli_renders_values_and_the_chart(installed: Path, tmp_path: Path) -> None:
    job = {
        "input": {"path": "abfs://corpora/reviews/"},
        "output": {"path": "abfs://results/run1"},
        "task": {"kind": "label", "labels": ["positive", "negative"]},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    values = yaml.safe_load(
        run(installed, "phifleet", "cluster", "render", "--job-config", "job.yaml", cwd=tmp_path).stdout
    )
    assert values["job"]["config"]["task"]["labels"] == ["positive", "negative"]
    # `submit --dry-run` runs `helm template` on the chart inside the installed package.
    objects = list(
        yaml.safe_load_all(
            run(
                installed,
                "phifleet",
                "cluster",
                "submit",
                "--config",
                "job.yaml",
                "--name",
                "j1",
                "--dry-run",
                cwd=tmp_path,
            ).stdout
        )
    )
    assert [o["kind"] for o in objects] == ["RayJob", "ConfigMap", "NetworkPolicy"]  # the job cluster gets a policy
    assert "phifleet.jobs" in objects[0]["spec"]["entrypoint"]
