"""Autoscaling on real Serve: sustained load takes the replica deployment from 1 to 2 replicas, idleness back to 1."""

import threading
import time

import openai
import pytest

from tests.serve.conftest import generates, running_app

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get("scaling")
    if app is None or "Phi4Replica" not in app.deployments:
        return 0
    return app.deployments["Phi4Replica"].replica_states.get("RUNNING", 0)


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def scaling_server(ray_local, tiny_dir):
    config = {
        "engine": {"model": str(tiny_dir), "served_model_name": "phi4-tiny"},
        "deployment": {
            "num_cpus": 0.25,
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 1,
                "downscale_delay_s": 3,
                "look_back_period_s": 2,
            },
        },
    }
    with running_app("scaling", config) as url:
        yield url


def test_scales_up_under_load_and_back_down(scaling_server):
    assert running_replicas() == 1
    client = openai.OpenAI(base_url=f"{scaling_server}/v1", api_key="x", max_retries=0, timeout=120)
    stop = threading.Event()
    errors: list[BaseException] = []

    def caller() -> None:  # each request ~0.5-1 s of generation: 4 callers keep ~4 requests ongoing
        while not stop.is_set():
            try:
                client.completions.create(
                    model="phi4-tiny", prompt="x", max_tokens=300, temperature=0, extra_body={"ignore_eos": True}
                )
            except BaseException as exc:
                errors.append(exc)
                return

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for t in callers:
        t.start()
    try:
        scaled_up = wait_for(lambda: running_replicas() == 2, timeout_s=90)
    finally:
        stop.set()
        for t in callers:
            t.join(120)
    assert not errors, errors
    assert scaled_up, "never reached 2 running replicas under sustained load"
    assert wait_for(lambda: running_replicas() == 1, timeout_s=90), "did not scale back to 1 replica when idle"
    assert generates(client, 2)
