"""`phifleet serve` as a user runs it: a process with its own embedded Ray, reachable, and stopped by a signal."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from tests.serve.conftest import free_port

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)


def ignore_sigint() -> None:
    """How a shell without job control starts a background job (`cmd &` in a script): SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c-from-a-background-start", "sigterm"])
def test_phifleet_serve_runs_and_stops_on_a_signal(tiny_dir, tmp_path, sig):
    """Ctrl-C, even when the process inherited SIGINT as ignored, and SIGTERM (docker stop, Kubernetes) both stop it."""
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"engine:\n  model: {tiny_dir}\n  served_model_name: phi4-tiny\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "PHIFLEET_API_KEYS": ""}
    exe = [sys.executable, "-m", "phifleet", "serve", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(
        exe, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=ignore_sigint
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        out = client.completions.create(  # ignore_eos: exactly 3 tokens, whatever the toy model would say
            model="phi4-tiny", prompt="Once upon a time", max_tokens=3, extra_body={"ignore_eos": True}
        )
        assert out.usage.completion_tokens == 3
        seen = []  # the URL line comes once serve.run has returned
        while not any(f"serving phi4-tiny at http://127.0.0.1:{port}/v1" in line for line in seen):
            line = proc.stdout.readline()
            assert line, "".join(seen)  # EOF: the server exited
            seen.append(line)
        proc.send_signal(sig)
        # A bound, not a wait: Serve's shutdown took over 60 s on a 2-core machine with its other core busy.
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "shutting down" in output
