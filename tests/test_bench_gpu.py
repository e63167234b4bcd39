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
    assert {"single-stream decode", "label scoring", "static batching", "continuous batching"} <= cases
    assert not [n for n in record["notes"] if "FAILED" in n], record["notes"]
    metrics = {r["metric"]: r["value"] for r in record["rows"] if "metric" in r}
    assert metrics["max |logits ds - hf|"] == 0  # fp32 on CPU: DeepSpeed at tp 1 is the same computation
    assert metrics["static vs continuous: identical greedy outputs (of 2, 32 tokens)"] == 2
    assert "| static batching | deepspeed |" in (tmp_path / "gpu_tiny.md").read_text()


def test_committed_gpu_table_is_rendered_from_the_raw_runs():
    runs = sorted((ROOT / "bench" / "results" / "gpu").glob("run*.json"))
    proc = run("--render", *map(str, runs))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "bench" / "results" / "gpu.md").read_text()
