"""`layout: single`: each Serve replica serves HTTP and runs the engine (no separate ingress deployment)."""

import asyncio
import time

import openai
import pytest
from ray import serve

from tests.serve.conftest import running_app
from tests.serve.test_openai_server import classify_messages

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)


@pytest.fixture(scope="module")
def single(ray_local, tiny_dir):
    with running_app(
        "single",
        {
            "engine": {"model": str(tiny_dir), "served_model_name": "phi4-tiny"},
            "deployment": {"layout": "single", "stream_interval_s": 1.0},  # the longest: chunking shows plainly
        },
    ) as url:
        yield url


def test_one_deployment_serves_the_whole_api(single):
    deployments = serve.status().applications["single"].deployments
    assert list(deployments) == ["OpenAIIngress"]
    client = openai.OpenAI(base_url=f"{single}/v1", api_key="x", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["phi4-tiny"]
    kw = {"model": "phi4-tiny", "messages": classify_messages("The kettle is awful."), "temperature": 0}
    out = client.chat.completions.create(**kw, max_tokens=8)
    assert out.choices[0].message.content == "negative"
    chunks = list(client.chat.completions.create(**kw, max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "negative"
    with pytest.raises(openai.BadRequestError):  # validation errors surface before the stream starts
        list(client.completions.create(model="phi4-tiny", prompt="word " * 3000, max_tokens=5, stream=True))


def test_concurrent_requests_batch_in_the_single_replica(single):
    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{single}/v1", api_key="x", max_retries=0, timeout=60)
        texts = ["The kettle is awful.", "I love this lamp, it is great.", "The tent is okay."] * 3

        async def one(text: str, stream: bool) -> str:
            kw = {"model": "phi4-tiny", "messages": classify_messages(text), "temperature": 0, "max_tokens": 8}
            if not stream:
                return (await client.chat.completions.create(**kw)).choices[0].message.content
            s = await client.chat.completions.create(**kw, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

        return await asyncio.gather(*(one(t, i % 2 == 1) for i, t in enumerate(texts)))

    assert asyncio.run(run()) == ["negative", "positive", "neutral"] * 3


def test_a_stream_ends_when_its_last_token_is_out_not_at_the_end_of_its_chunk_interval(single):
    """Tokens after the first travel at most once per stream_interval_s (1 s here), but the last one goes at once:
    a short stream used to wait out the interval, so every stream ended up to a whole interval late."""
    client = openai.OpenAI(base_url=f"{single}/v1", api_key="x", max_retries=0, timeout=60)
    kw = {"model": "phi4-tiny", "prompt": "Hello", "max_tokens": 24, "extra_body": {"ignore_eos": True}}
    client.completions.create(**kw)  # warm
    start = time.perf_counter()
    stream = client.completions.create(**kw, stream=True)
    arrivals = [(time.perf_counter() - start, c) for c in stream]
    texts = [c for _, c in arrivals if c.choices and c.choices[0].text]
    assert len(texts) < 24  # later tokens travelled together: the interval applies
    first = next(t for t, c in arrivals if c.choices and c.choices[0].text)
    assert arrivals[-1][0] - first < 0.8, arrivals[-1][0] - first  # not the 1 s interval after the first chunk
