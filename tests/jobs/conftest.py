"""Jobs run on a real local Ray (one per test session for in-process runs; subprocess runs start their own)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REVIEWS = ROOT / "examples" / "reviews.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (written as JSON) or strings (written as they are: malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_results(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in sorted((out / "results").glob("*")):
        rows += pq.read_table(f).to_pylist() if f.suffix == ".parquet" else read_jsonl(f)
    return rows


def read_errors(out: Path) -> list[dict]:
    rows: list[dict] = []
    for f in sorted((out / "errors").glob("*.jsonl")):
        rows += read_jsonl(f)
    return rows


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m phifleet.jobs ...` or the phifleet console script, in a fresh process with its own embedded Ray."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT
    )
