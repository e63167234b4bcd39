"""checkov (its own venv, scripts/install_checkov.sh) run offline over a directory, results as JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHECKOV = Path(__file__).resolve().parents[1] / ".tools" / "checkov" / "bin" / "checkov"


def checkov_results(framework: str, directory: Path, *extra: str) -> dict[str, Any]:
    """{'passed_checks', 'failed_checks', 'skipped_checks', ...} of one framework; fails if checkov is missing.
    ``extra``: more checkov arguments (e.g. `--var-file`, for Terraform resources a variable turns on)."""
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run scripts/install_checkov.sh (make test does)")
    cmd = [str(CHECKOV), "--framework", framework, "-d", str(directory), "--skip-download", "-o", "json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    return next(r for r in reports if r["check_type"] == framework)["results"]


def assert_clean(results: dict[str, Any], min_passed: int) -> None:
    """No failed check, every skip carries its reason, and checkov really evaluated something."""
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert all(c["check_result"].get("suppress_comment") for c in results.get("skipped_checks", []))
    assert len(results["passed_checks"]) > min_passed
