"""Real Ray Serve on loopback, called with the official openai client (and plain HTTP where it has no method)."""

import asyncio
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.serve.conftest import running_app

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

KEY = "sk-test-123"
SYSTEM = "Classify the text as one of: positive, negative, neutral. Answer with the label only."


@pytest.fixture(scope="module")
def base_url(ray_local, tiny_dir, tmp_path_factory):
    keys = tmp_path_factory.mktemp("secrets") / "api-keys"
    keys.write_text(f"{KEY}\nsk-other\n")
    config = {
        "engine": {"model": str(tiny_dir), "served_model_name": "phi4-tiny"},
        "auth": {"api_keys_file": str(keys)},
    }
    with running_app("phifleet", config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


def classify_messages(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def test_models(client):
    assert [m.id for m in client.models.list()] == ["phi4-tiny"]


def test_chat_completion(client):
    out = client.chat.completions.create(
        model="phi4-tiny", messages=classify_messages("The kettle is awful."), temperature=0, max_tokens=8
    )
    assert out.choices[0].message.content == "negative"
    assert out.choices[0].finish_reason == "stop"
    assert (
        out.usage.prompt_tokens > 10 and out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    )


def test_completion_length_and_stop(client):
    # ignore_eos: the toy model's own text (and where it stops) differs across CPUs; the length cut must not.
    out = client.completions.create(
        model="phi4-tiny", prompt="Once upon a time", max_tokens=4, temperature=0, extra_body={"ignore_eos": True}
    )
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 4


def test_ignore_eos_extension_generates_max_tokens(client):
    kw = {"model": "phi4-tiny", "messages": classify_messages("The kettle is awful."), "temperature": 0}
    assert client.chat.completions.create(**kw, max_tokens=30).usage.completion_tokens < 30
    out = client.chat.completions.create(**kw, max_tokens=30, extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 30 and out.choices[0].finish_reason == "length"


def test_n_choices(client):
    out = client.chat.completions.create(
        model="phi4-tiny",
        messages=[{"role": "user", "content": "Write a review."}],
        n=3,
        max_completion_tokens=6,
        seed=1,
    )
    assert [c.index for c in out.choices] == [0, 1, 2]


def test_streaming_matches_non_streaming(client):
    kw = {
        "model": "phi4-tiny",
        "messages": [{"role": "user", "content": "Write a positive review of a lamp."}],
        "temperature": 0,
        "max_tokens": 24,
    }
    whole = client.chat.completions.create(**kw).choices[0]
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == [whole.finish_reason]  # one finish reason, the same (the toy model may or may not stop by 24)


def test_concurrent_async_clients_are_batched_and_correct(base_url):
    async def run():
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)
        texts = ["The kettle is awful.", "I love this lamp, it is great.", "The tent is okay."] * 4
        outs = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model="phi4-tiny", messages=classify_messages(t), temperature=0, max_tokens=8
                )
                for t in texts
            )
        )
        return [o.choices[0].message.content for o in outs]

    assert asyncio.run(run()) == ["negative", "positive", "neutral"] * 4


def test_classify_endpoint(base_url):
    body = {"input": ["The kettle is awful.", "Fantastic blender!"], "labels": ["positive", "negative", "neutral"]}
    req = urllib.request.Request(
        f"{base_url}/v1/classify",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    data = json.loads(urllib.request.urlopen(req, timeout=60).read())
    assert [d["label"] for d in data["data"]] == ["negative", "positive"]
    assert abs(sum(data["data"][0]["scores"].values()) - 1) < 1e-6


def test_errors_have_openai_shape_and_status(client, base_url):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="phi4-tiny", prompt="hi", max_tokens=0)
    assert err.value.status_code == 400 and err.value.body["param"] == "max_tokens"

    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="phi4-tiny", prompt="word " * 3000, max_tokens=5)
    assert "context window" in err.value.body["message"]

    with pytest.raises(openai.BadRequestError) as err:  # the same check on the streaming path
        list(client.completions.create(model="phi4-tiny", prompt="word " * 3000, max_tokens=5, stream=True))

    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"

    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()

    req = urllib.request.Request(
        f"{base_url}/v1/chat/completions", data=b"{not json", headers={"Authorization": f"Bearer {KEY}"}
    )
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=30)
    assert http.value.code == 400 and "error" in json.loads(http.value.read())


def test_health_and_readiness(base_url):
    assert json.loads(urllib.request.urlopen(f"{base_url}/healthz", timeout=10).read()) == {"status": "ok"}
    ready = json.loads(urllib.request.urlopen(f"{base_url}/readyz", timeout=60).read())
    assert ready["status"] == "ready" and ready["model"] == "phi4-tiny"


def test_api_keys_compare_whole_keys():
    from phifleet.serve.auth import authorized

    assert authorized(None, ())  # no keys configured: open
    assert authorized("Bearer a", ("a", "b")) and authorized("Bearer b", ("a", "b"))
    assert not authorized("Bearer ab", ("a", "b")) and not authorized("a", ("a",)) and not authorized(None, ("a",))


HANDLE_LOOP = asyncio.new_event_loop()  # Serve's throughput mode routes a handle's calls on the caller's loop


def replica_stats() -> dict[str, int]:
    """Asks the replica over a Serve handle, always from the same event loop (the handle is bound to it)."""
    from ray import serve

    async def ask() -> dict[str, int]:
        return await serve.get_deployment_handle("Phi4Replica", app_name="phifleet").stats.remote()

    return HANDLE_LOOP.run_until_complete(asyncio.wait_for(ask(), timeout=30))


def test_a_client_that_disconnects_mid_stream_stops_its_generation(client):
    """2,000 tokens asked with ignore_eos (~5 s of generation on any CPU): closing early must stop it."""
    before = replica_stats()["cancelled_streams"]
    stream = client.completions.create(
        model="phi4-tiny", prompt="x", max_tokens=2000, temperature=0, stream=True, extra_body={"ignore_eos": True}
    )
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].text)
        if received == 3:
            break
    stream.close()  # drops the HTTP connection
    deadline, stats = time.time() + 20, {}
    while time.time() < deadline:
        stats = replica_stats()
        if stats["cancelled_streams"] > before and stats["running_streams"] == 0:
            break
        time.sleep(0.2)
    assert stats["cancelled_streams"] == before + 1 and stats["running_streams"] == 0, stats


def test_concurrent_streams_run_as_one_batch_and_match_non_streaming(base_url, client):
    texts = ["The kettle is awful.", "I love this lamp, it is great.", "The tent is okay.", "Great blender!"] * 2
    expected = [
        client.chat.completions.create(model="phi4-tiny", messages=classify_messages(t), temperature=0, max_tokens=8)
        .choices[0]
        .message.content
        for t in texts
    ]

    async def run() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)

        async def one(text: str) -> str:
            stream = await aclient.chat.completions.create(
                model="phi4-tiny", messages=classify_messages(text), temperature=0, max_tokens=8, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        return await asyncio.gather(*(one(t) for t in texts))

    assert asyncio.run(run()) == expected
    assert replica_stats()["largest_stream_batch"] > 1


def test_sustained_concurrent_requests_run_in_large_batches(base_url):
    """32 clients, each sending its next request as soon as its last is answered. A request that arrives while the
    engine is busy joins the running batch at its next step: engine steps average at least 8 requests."""
    before = replica_stats()

    async def run() -> None:
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)

        async def worker(i: int) -> None:
            for _ in range(3):
                await aclient.chat.completions.create(
                    model="phi4-tiny",
                    messages=[{"role": "user", "content": f"Review {i}"}],
                    temperature=0,
                    max_tokens=32,
                    extra_body={"ignore_eos": True},
                )

        await asyncio.gather(*(worker(i) for i in range(32)))

    asyncio.run(run())
    after = replica_stats()
    steps = after["generate_batches"] - before["generate_batches"]
    rows = after["generate_rows"] - before["generate_rows"]
    batched = after["generate_requests_batched"] - before["generate_requests_batched"]
    assert batched == 96 and rows / steps >= 8, (batched, rows, steps)


def test_a_bad_request_in_a_batch_fails_alone(base_url):
    """A prompt over the context window sent together with good ones: it gets its 400, the others their answers.

    The bad one is refused while it is tokenized, before it queues: the other 7 share engine steps."""

    async def run() -> list[int]:
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)

        async def one(prompt: str) -> int:
            try:
                await aclient.completions.create(model="phi4-tiny", prompt=prompt, max_tokens=24)
                return 200
            except openai.BadRequestError as exc:
                return exc.status_code

        return await asyncio.gather(*(one("word " * 3000 if i == 3 else f"Review {i}:") for i in range(8)))

    before = replica_stats()
    assert asyncio.run(run()) == [200, 200, 200, 400, 200, 200, 200, 200]
    after = replica_stats()
    steps = after["generate_batches"] - before["generate_batches"]
    rows = after["generate_rows"] - before["generate_rows"]
    assert after["generate_requests_batched"] - before["generate_requests_batched"] == 7 and rows / steps > 1


def scrape(metrics_url: str, names: list[str]) -> dict[str, list[str]]:
    """Sample lines per metric name from Ray's Prometheus endpoint."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return {n: [line for line in text.splitlines() if line.startswith(n)] for n in names}


def test_prometheus_metrics(client, ray_local):
    client.chat.completions.create(model="phi4-tiny", messages=classify_messages("Great lamp."), max_tokens=4)
    # ignore_eos: a stream that surely produces tokens, so time-to-first-token is observed
    list(
        client.completions.create(
            model="phi4-tiny", prompt="Hello", max_tokens=4, stream=True, extra_body={"ignore_eos": True}
        )
    )
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")  # an unknown route: counted under 'other', answered in OpenAI's shape
    assert err.value.body["type"] == "not_found_error"
    names = [
        "ray_phifleet_requests_total",
        "ray_phifleet_request_latency_seconds_bucket",
        "ray_phifleet_time_to_first_token_seconds_count",
        "ray_phifleet_generated_tokens_total",
        "ray_phifleet_prompt_tokens_total",
        "ray_phifleet_replica_queue_depth",
        "ray_phifleet_batch_size_bucket",
        "ray_phifleet_replica_running_streams",
    ]

    def complete(found: dict[str, list[str]]) -> bool:
        requests = found["ray_phifleet_requests_total"]
        return all(found.values()) and all(
            any(route in s and status in s for s in requests)
            for route, status in (('route="/v1/chat/completions"', 'status="200"'), ('route="other"', 'status="404"'))
        )

    deadline = time.time() + 30  # metrics reach the endpoint within a report interval (1 s in tests)
    while not complete(found := scrape(ray_local, names)) and time.time() < deadline:
        time.sleep(1)
    assert complete(found), found
    assert all('deployment="OpenAIIngress"' in s for s in found["ray_phifleet_requests_total"])
    assert any('deployment="Phi4Replica"' in s for s in found["ray_phifleet_batch_size_bucket"])
    generated = sum(float(s.rsplit(" ", 1)[1]) for s in found["ray_phifleet_generated_tokens_total"])
    assert generated >= 5


def test_logprobs_chat_stream_and_completions(client):
    """Log-probabilities over HTTP with the official client's types: one entry per generated token."""
    kw = {"model": "phi4-tiny", "temperature": 0, "max_tokens": 4, "extra_body": {"ignore_eos": True}}
    messages = [{"role": "user", "content": "Write a review."}]
    out = client.chat.completions.create(messages=messages, logprobs=True, top_logprobs=2, **kw)
    content = out.choices[0].logprobs.content
    assert len(content) == 4 == out.usage.completion_tokens
    for entry in content:  # greedy: the chosen token is the most likely one
        assert len(entry.top_logprobs) == 2 and entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
    chunks = client.chat.completions.create(messages=messages, logprobs=True, stream=True, **kw)
    streamed = [e.token for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content or []]
    assert streamed == [e.token for e in content]
    cmpl = client.completions.create(prompt="Once upon a time", logprobs=2, **kw)
    lp = cmpl.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == 4
    assert lp.text_offset == sorted(lp.text_offset)


def test_logit_bias_forces_a_token_and_refused_parameters_are_named(client):
    kw = {"model": "phi4-tiny", "temperature": 0, "max_tokens": 3, "extra_body": {"ignore_eos": True}}
    out = client.completions.create(prompt="Once upon a time", logprobs=0, logit_bias={"7": 100}, **kw)
    assert len(set(out.choices[0].logprobs.tokens)) == 1  # the same (forced) token three times
    messages = [{"role": "user", "content": "Hi"}]
    for extra in ({"tools": [{"type": "function", "function": {"name": "f"}}]}, {"frequency_penalty": 0.5}):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="phi4-tiny", messages=messages, **extra)
        assert err.value.body["param"] == next(iter(extra))


def test_response_format_json_schema_over_http_streaming_and_not(base_url, client):
    """20 reviews through the official client, greedy and sampled, each object valid under the schema, streamed and
    not (a stream's deltas joined). Structured output is decoded in the engine's step, so nothing here trusts a
    post-hoc parse."""
    import jsonschema

    from phifleet.engine.prompts import DEFAULT_EXTRACT_INSTRUCTION
    from phifleet.engine.tiny.build import review_schema
    from phifleet.engine.tiny.corpus import reviews

    schema = review_schema(["sentiment", "product"], ["positive", "negative", "neutral"])
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": schema, "strict": True}}
    system = DEFAULT_EXTRACT_INSTRUCTION.replace("{schema}", json.dumps(schema))
    texts = [r.text for r in reviews(20, seed=5, held_out=True)]

    def messages(text: str) -> list[dict]:
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    async def run() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=120)
        calls = [
            aclient.chat.completions.create(
                model="phi4-tiny", messages=messages(t), response_format=fmt, temperature=i % 2, seed=i, max_tokens=64
            )
            for i, t in enumerate(texts)
        ]
        outs = await asyncio.gather(*calls)
        assert {o.choices[0].finish_reason for o in outs} == {"stop"}
        return [o.choices[0].message.content for o in outs]

    for content in asyncio.run(run()):
        jsonschema.validate(json.loads(content), schema)

    async def streamed() -> list[tuple[str, list[str]]]:
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=120)

        async def one(i: int, text: str) -> tuple[str, list[str]]:
            stream = await aclient.chat.completions.create(
                model="phi4-tiny", messages=messages(text), response_format=fmt, stream=True, temperature=i % 2, seed=i
            )
            parts, reasons = [], []
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                    if chunk.choices[0].finish_reason:
                        reasons.append(chunk.choices[0].finish_reason)
            return "".join(parts), reasons

        return await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))

    for text, reasons in asyncio.run(streamed()):
        jsonschema.validate(json.loads(text), schema)
        assert reasons == ["stop"]

    cut = client.chat.completions.create(
        model="phi4-tiny", messages=messages(texts[0]), response_format=fmt, max_tokens=3, temperature=0
    )
    assert cut.choices[0].finish_reason == "length"  # an unfinished object is reported, never passed as whole

    bad = {
        "type": "json_schema",
        "json_schema": {"name": "bad", "schema": {"type": "integer", "minimum": 3, "maximum": 1}},
    }
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            out = client.chat.completions.create(
                model="phi4-tiny", messages=messages("x"), response_format=bad, stream=stream
            )
            list(out) if stream else None
        assert (
            err.value.body["param"] == "response_format" and "minimum greater than maximum" in err.value.body["message"]
        )
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="phi4-tiny", messages=messages("x"), response_format=fmt, stop=["}"])
    assert err.value.body["param"] == "stop"
