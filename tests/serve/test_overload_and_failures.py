"""Overload gives 429s quickly (never a hang), and a replica killed mid-traffic is replaced."""

import asyncio
import time

import openai
import pytest

from tests.serve.test_openai_server import free_port


@pytest.fixture(scope="module")
def small_server(ray_local, tiny_dir):
    """One replica that takes one request at a time and queues at most one more."""
    from ray import serve

    from serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(
        {
            "engine": {"model": str(tiny_dir)},
            "model_name": "phi4-tiny",
            "max_ongoing_requests": 1,
            "max_queued_requests": 1,
            "batch_wait_timeout_s": 0.0,
        }
    )
    serve.run(app, name="small", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.delete("small")
    serve.shutdown()


def test_burst_beyond_the_queue_bound_gets_429s_not_hangs(small_server):
    async def burst():
        client = openai.AsyncOpenAI(base_url=f"{small_server}/v1", api_key="x", max_retries=0, timeout=60)

        async def one():
            try:
                await client.completions.create(model="phi4-tiny", prompt="Once upon a time", max_tokens=200)
                return 200, None
            except openai.RateLimitError as exc:
                return 429, exc.response.headers.get("retry-after")

        return await asyncio.gather(*(one() for _ in range(12)))

    started = time.time()
    results = asyncio.run(burst())
    statuses = [s for s, _ in results]
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    assert all(after == "1" for s, after in results if s == 429)
    assert time.time() - started < 60


def test_a_killed_replica_is_replaced(small_server):
    import ray

    client = openai.OpenAI(base_url=f"{small_server}/v1", api_key="x", max_retries=0, timeout=60)
    assert client.completions.create(model="phi4-tiny", prompt="Hello", max_tokens=2).usage.completion_tokens == 2
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if "Phi4Replica" in a["name"]]
    assert actors, "no replica actor found"
    ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)
    deadline, ok = time.time() + 120, False
    while time.time() < deadline and not ok:
        try:
            ok = client.completions.create(model="phi4-tiny", prompt="Hello", max_tokens=2).usage.completion_tokens == 2
        except openai.APIError:
            time.sleep(2)
    assert ok, "no replica answered after the kill"
