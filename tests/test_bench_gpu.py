"""The GPU benchmark stays runnable without a GPU, and its committed table is what its code renders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu" / "phi4_gpu.py"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_tiny_run_end_to_end_on_cpu(tmp_path):
    proc = run("--tiny", "--repeats", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_tiny.json").read_text())
    cases = {r["case"] for r in record["rows"]}
    assert {
        "single-stream decode",
        "batched generation",
        "32 concurrent streams",
        "decode step breakdown",
        "agreement with HF eager",
        "label scoring",
        "structured output",
        "fastgen probe",
    } <= cases
    assert not [n for n in record["notes"] if "FAILED" in n], record["notes"]
    metrics = {r["metric"]: r["value"] for r in record["rows"] if "metric" in r}
    # fp32 on CPU: the paged runner computes what the HF model computes, token for token.
    assert metrics["max |logits paged runner - hf| (64-token prefill)"] == 0
    assert metrics["greedy outputs identical to HF eager (of 4, 32 tokens)"] == 4
    assert metrics["our greedy tokens that are HF's argmax on our own path (of 128)"] == 128
    backends = {(r["case"], r.get("backend")) for r in record["rows"]}
    assert ("label scoring", "continuous, one pass, 16-token shared prefix") in backends
    assert ("batched generation", "static (before)") in backends
    assert ("structured output", "json_schema") in backends  # the synthetic vocabulary spells JSON (ASCII ids)
    assert metrics["structured output: constrained / free tokens/s, batch 4"] > 0
    assert "| batched generation | continuous |" in (tmp_path / "gpu_tiny.md").read_text()


def test_committed_gpu_table_is_rendered_from_the_raw_runs():
    folder = ROOT / "bench" / "results" / "gpu"
    runs = sorted(folder.glob("run*.json")) + sorted(folder.glob("fastgen*.json"))
    proc = run("--render", *map(str, runs))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "bench" / "results" / "gpu.md").read_text()


def test_fastgen_probe_writes_the_checkpoint_and_records_the_cpu_build_failure(tmp_path):
    """--tiny on CPU: a real Phi3 safetensors checkpoint, then a build_engine stage that fails with its reason."""
    out = tmp_path / "fastgen.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}  # its temp checkpoint dir lands here
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("fastgen_probe.py")), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["status"] == "done"
    stages = record["stages"]
    assert stages["import"]["status"] == "ok"
    written = stages["write_checkpoint"]
    assert written["status"] == "ok", written
    assert "model.safetensors" in written["files"] and "config.json" in written["files"]
    assert written["bytes"] > 50_000_000  # Phi-4's 100352-token embedding and lm_head, even at toy width
    build = stages["build_engine"]
    assert build["model_type"] == "phi3" and build["checkpoint_files"] == ["model.safetensors"]
    if record["env"]["cuda_available"]:
        assert build["status"] in {"ok", "failed"}
    else:
        assert build["status"] == "failed" and "CUDA" in build["error"]["message"]
        assert stages["prefill"]["status"] == stages["decode"]["status"] == "skipped"
    assert written["path"].startswith(str(tmp_path)) and not Path(written["path"]).exists()  # removed at the end
    assert "stage build_engine" in proc.stdout  # progress lines, flushed as it goes
