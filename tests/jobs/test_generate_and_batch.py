"""Generation jobs and OpenAI Batch files, read back with the official openai package's types."""

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from phifleet.jobs.config import BatchTask, GenerateTask, InputConfig, JobConfig, OutputConfig
from phifleet.jobs.pipeline import run_job
from tests.jobs.conftest import read_errors, read_jsonl, read_results, write_jsonl

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)


def test_generate_job(ray_local, tmp_path):
    rows = [
        {"id": "k", "product": "kettle", "tone": "negative"},
        {"id": "l", "product": "lamp", "tone": "positive"},
        {"id": "x", "product": "tent"},  # no 'tone' column for the template
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    task = GenerateTask(prompt_template="Write a {tone} review of a {product}.", max_tokens=24, seed=3)
    manifest = run_job(
        JobConfig(input=InputConfig(path=str(src)), output=OutputConfig(path=str(out), format="jsonl"), task=task)
    )
    results = {r["id"]: r for r in read_results(out)}
    assert set(results) == {"k", "l"}
    for r in results.values():  # properties only: the toy model's free-running text differs across CPUs
        assert isinstance(r["text"], str) and r["finish_reason"] in ("stop", "length") and r["prompt_tokens"] > 0
        assert 0 <= r["completion_tokens"] <= 24 and (r["finish_reason"] == "stop" or r["completion_tokens"] == 24)
    [err] = read_errors(out)
    assert err["id"] == "x" and "needs column 'tone'" in err["error"]
    assert manifest["tokens"]["completion"] == sum(r["completion_tokens"] for r in results.values())


BATCH_LINES = [
    {
        "custom_id": "chat-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "phi-4",
            "messages": [
                {
                    "role": "system",
                    "content": "Classify the text as one of: positive, negative, neutral. Answer with the label only.",
                },
                {"role": "user", "content": "The kettle is awful."},
            ],
            "max_tokens": 8,
            "temperature": 0,
        },
    },
    {
        "custom_id": "chat-n2",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "messages": [{"role": "user", "content": "Write a positive review of a lamp."}],
            "max_completion_tokens": 12,
            "n": 2,
            "seed": 5,
        },
    },
    {
        "custom_id": "cmpl-1",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "stop": ["zzz"], "ignore_eos": True},
    },
    {"custom_id": "bad-url", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},
    {"custom_id": "bad-tokens", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": -1}},
    {"method": "POST", "url": "/v1/completions", "body": {"prompt": "no custom id"}},
    '{"custom_id": "broken", ',
]


def test_openai_batch_round_trip(ray_local, tmp_path):
    src = write_jsonl(tmp_path / "batch.jsonl", BATCH_LINES)
    out = tmp_path / "out"
    manifest = run_job(
        JobConfig(input=InputConfig(path=str(src)), output=OutputConfig(path=str(out)), task=BatchTask())
    )
    output = {line["custom_id"]: line for line in read_jsonl(out / "output.jsonl")}
    errors = read_jsonl(out / "errors.jsonl")
    assert set(output) == {"chat-1", "chat-n2", "cmpl-1"}
    for line in output.values():
        assert line["response"]["status_code"] == 200 and line["error"] is None and line["id"].startswith("batch_req_")

    chat = ChatCompletion.model_validate(output["chat-1"]["response"]["body"])
    assert isinstance(chat.choices[0].message.content, str) and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.model == manifest["model"] == "phi4-tiny"
    assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens <= 8
    two = ChatCompletion.model_validate(output["chat-n2"]["response"]["body"])
    assert [c.index for c in two.choices] == [0, 1]
    assert two.usage.completion_tokens <= 24
    cmpl = Completion.model_validate(output["cmpl-1"]["response"]["body"])  # ignore_eos: exactly max_tokens
    assert cmpl.object == "text_completion" and cmpl.usage.completion_tokens == 5
    assert cmpl.choices[0].finish_reason == "length"

    by_id = {e["custom_id"]: e for e in errors}
    assert by_id["bad-url"]["response"]["status_code"] == 400
    assert by_id["bad-url"]["response"]["body"]["error"]["param"] == "url"
    assert by_id["bad-tokens"]["response"]["body"]["error"]["param"] == "max_tokens"
    assert by_id[None]["error"]["code"] in ("missing_custom_id", "invalid_json")
    assert {e["error"]["line"] for e in errors if e["error"]} == {6, 7}
    c = manifest["counts"]
    assert (c["input"], c["ok"], c["errors"], c["accounted"]) == (7, 3, 4, True)
    assert manifest["outputs"]["output_file"] == "output.jsonl"
