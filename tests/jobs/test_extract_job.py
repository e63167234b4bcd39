"""Extract jobs on a real local Ray: the bundled reviews in, the schema's fields out as typed Parquet columns, with
exact per-value probabilities for the enum; unfinished or impossible objects as error rows; OpenAI Batch lines with
response_format."""

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifleet.engine.tiny.build import review_schema
from phifleet.engine.types import GenerationResult
from phifleet.jobs.config import BatchTask, ExtractTask, InputConfig, JobConfig, OutputConfig
from phifleet.jobs.json_columns import arrow_type, arrow_value, choices
from phifleet.jobs.kinds.extract import ExtractKind
from phifleet.jobs.pipeline import run_job
from phifleet.jobs.rows import RowError
from tests.jobs.conftest import REVIEWS, read_errors, read_jsonl, read_results, write_jsonl

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

SCHEMA = review_schema(["sentiment", "product"], ["positive", "negative", "neutral"])


def test_extract_on_the_bundled_reviews_gives_typed_columns_and_enum_probabilities(ray_local, tmp_path):
    rows = read_jsonl(REVIEWS)[:60]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    config = JobConfig(
        input=InputConfig(path=str(src)), output=OutputConfig(path=str(out)), task=ExtractTask(schema=SCHEMA)
    )
    manifest = run_job(config)
    assert manifest["counts"]["ok"] == 60 and manifest["counts"]["errors"] == 0
    (shard,) = sorted((out / "results").glob("*.parquet"))[:1] or [None]
    schema = pq.read_schema(shard)
    assert schema.field("sentiment").type == pa.string() and schema.field("product").type == pa.string()
    assert schema.field("sentiment_probability").type == pa.float64()
    assert schema.field("sentiment_logprobs").type == pa.struct(
        [("positive", pa.float64()), ("negative", pa.float64()), ("neutral", pa.float64())]
    )
    labels = {r["id"]: r["label"] for r in rows}
    results = read_results(out)
    for r in results:
        probs = {k: math.exp(v) for k, v in r["sentiment_logprobs"].items()}
        total = sum(probs.values())
        assert abs(sum(p / total for p in probs.values()) - 1) < 1e-9  # a distribution over the enum
        assert r["sentiment"] == max(probs, key=probs.get)  # filled by scoring: the likeliest value
        assert abs(r["sentiment_probability"] - probs[r["sentiment"]] / total) < 1e-9
        assert json.loads(r["json"]) == {"sentiment": r["sentiment"], "product": r["product"]}
        assert r["finish_reason"] == "stop" and r["completion_tokens"] > 0
    right = sum(r["sentiment"] == labels[r["id"]] for r in results)
    assert right >= 54, right  # held-out templates and products (examples/make_reviews.py): 98% by label scoring


def test_objects_cut_by_max_tokens_are_error_rows_never_results(ray_local, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", read_jsonl(REVIEWS)[:6])
    out = tmp_path / "out"
    task = ExtractTask(schema=SCHEMA, max_tokens=5, enum_probabilities=False)
    manifest = run_job(JobConfig(input=InputConfig(path=str(src)), output=OutputConfig(path=str(out)), task=task))
    assert manifest["counts"]["ok"] == 0 and manifest["counts"]["errors"] == 6
    for err in read_errors(out):
        assert err["code"] == "incomplete_output" and "max_tokens (5 tokens)" in err["error"]


def test_an_optional_enum_left_out_is_null_not_an_error():
    """xgrammar keeps properties outside `required` optional: an object without one is valid, and its enum columns are
    null; an integer Arrow cannot hold is that row's error, not the shard's."""
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "n": {"type": "integer"},
        },
        "required": ["n"],
        "additionalProperties": False,
    }
    kind = ExtractKind(
        JobConfig(input=InputConfig(path="x"), output=OutputConfig(path="y"), task=ExtractTask(schema=schema)), "m"
    )
    row = kind.shape.flatten(
        {
            "object": {"n": 3},
            "finish_reason": "stop",
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "probability": {},
            "logprobs": {},
        }
    )
    assert row["sentiment"] is None and row["sentiment_probability"] is None and row["sentiment_logprobs"] is None
    pa.Table.from_pylist([row], schema=pa.schema(kind.shape.output_fields()))  # writable as it is
    huge = GenerationResult(
        text='{"n": 1180591620717411303424}', finish_reason="stop", prompt_tokens=1, completion_tokens=9, token_ids=()
    )
    with pytest.raises(RowError) as err:  # valid JSON, valid under the schema, but no int64
        kind._answer(None, None, huge)
    assert err.value.code == "invalid_output" and "does not fit its column" in str(err.value)


def test_a_schema_that_cannot_constrain_decoding_fails_at_the_config():
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        ExtractTask(schema={"type": "object", "properties": {"a": {"type": "strin"}}})
    with pytest.raises(ValueError, match=r"cannot constrain decoding to it: .*minimum greater than maximum"):
        ExtractTask(schema={"type": "object", "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 1}}})
    with pytest.raises(ValueError, match="collide"):
        ExtractTask(schema={"type": "object", "properties": {"json": {"type": "string"}}})


def test_arrow_types_follow_the_schema_not_the_values():
    nested = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"type": ["number", "null"]},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "where": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}}},
            "any": {},
            "mixed": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    assert arrow_type(nested) == pa.struct(
        [
            ("n", pa.int64()),
            ("x", pa.float64()),
            ("ok", pa.bool_()),
            ("tags", pa.list_(pa.string())),
            ("where", pa.struct([("city", pa.string()), ("zip", pa.int64())])),
            ("any", pa.large_string()),  # JSON text (no single Arrow type), told apart from strings by its type
            ("mixed", pa.large_string()),
        ]
    )
    assert arrow_value("1", pa.large_string()) == '"1"' and arrow_value(1, pa.large_string()) == "1"
    assert choices({"type": "boolean"}) == [True, False] and choices({"enum": ["a", 1]}) is None
    assert choices({"type": "boolean", "const": True}) is None and choices({"enum": ["x", "y"]}) == ["x", "y"]


def test_openai_batch_lines_with_response_format(ray_local, tmp_path):
    system = "Extract from the text a JSON object that follows this JSON schema: " + json.dumps(SCHEMA)
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}}
    body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "The kettle is awful."}]}
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "bad", "schema": {"type": "integer", "minimum": 2, "maximum": 1}},
    }
    lines = [
        {"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions", "body": {**body, "response_format": fmt}},
        {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {**body, "response_format": bad}},
    ]
    src = write_jsonl(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "out"
    run_job(JobConfig(input=InputConfig(path=str(src)), output=OutputConfig(path=str(out)), task=BatchTask()))
    (ok,) = read_jsonl(out / "output.jsonl")
    content = ok["response"]["body"]["choices"][0]["message"]["content"]
    assert ok["custom_id"] == "ok" and json.loads(content)["sentiment"] in ("positive", "negative", "neutral")
    (err,) = read_jsonl(out / "errors.jsonl")
    assert err["custom_id"] == "bad" and "minimum greater than maximum" in json.dumps(err)
