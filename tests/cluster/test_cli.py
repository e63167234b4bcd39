"""The phifleet CLI, run as a user would run it (a real subprocess on the installed console script)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def phifleet(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("phifleet", path=str(Path(sys.executable).parent)) or "phifleet"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_explains_every_command():
    out = phifleet("--help").stdout
    for command in ("model", "generate-one"):
        assert command in out
    model_help = phifleet("model", "--help").stdout
    for command in ("build-tiny", "info", "eval"):
        assert command in model_help
    assert "--max-tokens" in phifleet("generate-one", "--help").stdout


def test_model_info(tiny_dir):
    info = json.loads(phifleet("model", "info", str(tiny_dir)).stdout)
    assert info["architecture"] == "Phi3ForCausalLM"
    assert info["phi4_special_tokens"]["<|im_end|>"] is not None
    assert info["parameters"] == info["phi4_tiny"]["parameters"]


def test_generate_one(tiny_dir):
    prompt = "The kettle is awful."
    system = "Classify the text as one of: positive, negative, neutral. Answer with the label only."
    out = phifleet("generate-one", prompt, "--system", system, "--model", str(tiny_dir)).stdout
    assert out.splitlines()[0] == "negative"
    assert "finish=stop" in out


def test_generate_one_stream(tiny_dir):
    out = phifleet(
        "generate-one",
        "Write a negative review of a lamp.",
        "--stream",
        "--max-tokens",
        "4",
        "--model",
        str(tiny_dir),
    ).stdout
    assert "finish=length" in out and "completion_tokens=4" in out


def test_eval_on_bundled_examples(tiny_dir):
    out = phifleet("model", "eval", str(ROOT / "examples" / "reviews.jsonl"), "--model", str(tiny_dir)).stdout
    accuracy = float(out.split("accuracy ")[1].split("%")[0])
    assert accuracy >= 90.0, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate-one", "hi", "--model", "/nonexistent/model"], "error (model): model directory"),
        (["generate-one", "hi", "--dtype", "float8"], "invalid configuration: dtype"),
        (["generate-one", "hi", "--max-tokens", "0"], "error (max_tokens)"),
    ],
)
def test_errors_are_one_clear_line(args, message, tiny_dir):
    proc = phifleet(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
