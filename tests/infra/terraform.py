"""infra/azure read offline: the HCL parsed with python-hcl2, and expressions evaluated by Terraform itself.

No provider can be downloaded here, so `terraform validate`/`plan` cannot run. But `terraform console` needs no
provider for a module that declares none: the files whose locals reference only variables (scheduling.tf,
release_values.tf, variables.tf) are copied into a scratch module, the few resource attributes release_values.tf
takes are stubbed as locals, and the very expressions main.tf and helm.tf use (read from the parsed HCL) are
evaluated there — Terraform's own functions and conditionals, not a re-implementation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
AZURE = ROOT / "infra" / "azure"
README = AZURE / "README.md"
# Variables the module requires (no default): any valid value serves for evaluating locals.
REQUIRED_VARS = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "api_server_authorized_ip_ranges": ["203.0.113.7/32"],
}
# Resource attributes release_values.tf takes through locals (main.tf, redis.tf), stubbed for evaluation.
STUB_LOCALS = {
    "storage_account_name": "phifleetdatastub01",
    "redis_address": "rediss://phifleet-gcs-stub01.redis.cache.windows.net:6380",
}
PURE_FILES = ("variables.tf", "scheduling.tf", "release_values.tf")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def hcl_string(value: str) -> str:
    """python-hcl2 keeps string literals quoted: '"sku=gpu:NoSchedule"' -> 'sku=gpu:NoSchedule'."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def hcl_expression(value: str) -> str:
    """python-hcl2 wraps an expression attribute as '${...}': the expression Terraform evaluates."""
    assert value.startswith("${") and value.endswith("}"), f"not an expression: {value!r}"
    return value[2:-1]


def load_module() -> dict[str, Any]:
    """All .tf files merged: {'resource': {type: {name: body}}, 'variable': {...}, 'locals': {...}, ...}."""
    merged: dict[str, Any] = {"resource": {}, "variable": {}, "locals": {}, "output": {}, "data": {}}
    for path in sorted(AZURE.glob("*.tf")):
        doc = hcl2.loads(path.read_text())
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                bodies = {hcl_string(name): body for name, body in named.items()}
                merged["resource"].setdefault(hcl_string(rtype), {}).update(bodies)
        for key in ("variable", "output", "data"):
            for block in doc.get(key, []):
                merged[key].update({hcl_string(k): v for k, v in block.items()})
        for block in doc.get("locals", []):
            merged["locals"].update(block)
    return merged


def terraform_binary() -> str:
    binary = shutil.which("terraform") or shutil.which("tofu")
    if binary is None:
        pytest.skip("no terraform/tofu binary on PATH (none is installable from PyPI, npm or Debian): not evaluated")
    return binary


def _var_arg(name: str, value: Any) -> str:
    return f"-var={name}={value if isinstance(value, str) else json.dumps(value)}"


def evaluate(expressions: dict[str, str], variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate HCL ``expressions`` (name -> expression text) in infra/azure's pure files with ``variables`` set."""
    proc = _console(expressions, variables)
    # The console exits 0 even when a variable fails its validation (it then warns that results may be wrong).
    assert proc.returncode == 0 and "Error:" not in proc.stderr, proc.stdout + proc.stderr
    # The value is the last line: the JSON as an HCL string literal (JSON's escapes, with ${ and %{ doubled).
    literal = proc.stdout.strip().splitlines()[-1].replace("$${", "${").replace("%%{", "%{")
    return json.loads(json.loads(literal))


def evaluation_error(expressions: dict[str, str], variables: dict[str, Any]) -> str:
    """Terraform's error when ``variables`` are refused (a variable's validation); fails if they are accepted."""
    proc = _console(expressions, variables)
    error = " ".join(ANSI.sub("", proc.stderr).replace("│", " ").split())
    assert "Error:" in error, f"terraform accepted {variables}: {proc.stdout}"
    return error


def _console(expressions: dict[str, str], variables: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
    binary = terraform_binary()
    with tempfile.TemporaryDirectory(prefix="phifleet-tf-") as scratch:
        work = Path(scratch)
        for name in PURE_FILES:
            shutil.copy(AZURE / name, work / name)
        stubs = "\n".join(f"  {k} = {json.dumps(v)}" for k, v in STUB_LOCALS.items())
        (work / "stubs.tf").write_text(f"locals {{\n{stubs}\n}}\n")
        (work / "terraformrc").write_text("")
        env = {**os.environ, "TF_CLI_CONFIG_FILE": str(work / "terraformrc"), "CHECKPOINT_DISABLE": "1"}
        env["TF_IN_AUTOMATION"] = "1"
        args = [_var_arg(k, v) for k, v in {**REQUIRED_VARS, **(variables or {})}.items()]
        body = ", ".join(f"{json.dumps(name)} = ({expr})" for name, expr in expressions.items())
        return subprocess.run(
            [binary, "console", *args],
            input=f"jsonencode({{{body}}})\n",
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
