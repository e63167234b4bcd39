"""The phifleet CLI, run as a user would run it (a real subprocess on the installed console script)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the phifleet console script as a subprocess (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]


def phifleet(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("phifleet", path=str(Path(sys.executable).parent)) or "phifleet"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
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
    """A prompt from phi4-tiny's training templates: it answers the label and stops."""
    prompt = "The kettle is awful."
    system = "Classify the text as one of: positive, negative, neutral. Answer with the label only."
    out = phifleet("generate-one", prompt, "--system", system, "--model", str(tiny_dir)).stdout
    assert out.splitlines()[0] == "negative"
    assert "finish=stop" in out


def test_generate_one_stream(tiny_dir):
    """Streams then prints the usage line; where the toy model stops is its own business (it differs by CPU)."""
    out = phifleet(
        "generate-one",
        "Write a negative review of a lamp.",
        "--stream",
        "--max-tokens",
        "4",
        "--model",
        str(tiny_dir),
    ).stdout
    usage = re.search(r"\[finish=(stop|length) prompt_tokens=(\d+) completion_tokens=(\d+)\]", out)
    assert usage, out
    finish, completion = usage.group(1), int(usage.group(3))
    assert 1 <= completion <= 4 and (finish == "length") == (completion == 4)
    assert out[: usage.start()].strip()  # the streamed text came first


def eval_accuracy(name: str, tiny_dir, *args: str) -> tuple[float, str]:
    out = phifleet("model", "eval", str(ROOT / "examples" / name), "--model", str(tiny_dir), *args).stdout
    return float(out.split("accuracy ")[1].split("%")[0]), out


def test_eval_on_bundled_examples(tiny_dir):
    accuracy, out = eval_accuracy("reviews.jsonl", tiny_dir)  # the file's labels: negative, neutral, positive
    assert accuracy >= 90.0, out


def test_eval_on_natural_reviews(tiny_dir):
    accuracy, out = eval_accuracy("natural_reviews.jsonl", tiny_dir, "--labels", "positive,negative")
    assert accuracy >= 80.0, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate-one", "hi", "--model", "/nonexistent/model"], "error (model): model directory"),
        (["generate-one", "hi", "--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
        (["generate-one", "hi", "--max-tokens", "0"], "invalid configuration: task.max_tokens (--max-tokens): Input"),
        (["serve", "--max-replicas", "0"], "deployment.autoscaling.max_replicas (--max-replicas): Input"),
    ],
)
def test_errors_are_one_clear_line(args, message, tiny_dir):
    proc = phifleet(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_job_keeps_rays_core_worker_notice_for_verbose(tmp_path):
    """Ray's C++ core worker prints `core_worker.cc … constructor arguments in the object store` once per actor pool
    straight to fd 2 (harmless: jobs/stderr_filter.py). The default output leaves it out; `-v` shows it, which
    proves the filter is what hides it, and that its pattern matches the real line."""
    from phifleet.jobs.stderr_filter import RAY_CORE_NOTICES

    job = ["label", str(ROOT / "examples" / "reviews.jsonl"), "--labels", "positive,negative,neutral"]
    env = {"RAY_AUTH_MODE": "disabled"}
    quiet = phifleet(*job, "--output", str(tmp_path / "quiet"), env=env)
    assert "300 rows -> 300 ok, 0 errors" in quiet.stdout
    assert "constructor arguments in the object store" not in quiet.stderr, quiet.stderr
    assert "Started a local Ray instance" in quiet.stderr  # the rest of stderr still comes through

    verbose = phifleet("-v", *job, "--output", str(tmp_path / "verbose"), env=env)
    assert "300 rows -> 300 ok, 0 errors" in verbose.stdout
    notices = [line for line in verbose.stderr.splitlines() if any(p.search(line) for p in RAY_CORE_NOTICES)]
    assert notices and "core_worker.cc" in notices[0], verbose.stderr[-3000:]


@pytest.mark.parametrize("problem", ["no-kuberay", "expired-token"])
def test_cluster_errors_are_one_line_without_a_traceback(tmp_path, problem):
    """`phifleet cluster status` against the fake API server (tests/cluster/fake_kube.py: no API server runs here),
    from the console script: a refusal is one line naming its cause, and the exit code says it failed."""
    from tests.cluster.fake_kube import FakeKube

    with FakeKube(serve_kuberay=problem != "no-kuberay") as fake:
        kubeconfig = fake.kubeconfig(tmp_path, token="expired" if problem == "expired-token" else None)
        proc = phifleet("cluster", "status", "-n", "batch", "--kubeconfig", str(kubeconfig), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    cause = "install the KubeRay operator" if problem == "no-kuberay" else "(401 Unauthorized)"
    assert proc.stderr.startswith("phifleet: error: ") and cause in proc.stderr
