"""Structured output on the continuous engine with the shipped tiny model: every object parses and validates against
its schema, greedy and sampled, beside unconstrained rows in the same steps; an object cut by max_tokens is flagged."""

from __future__ import annotations

import json

import jsonschema
import pytest

from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.prompts import extraction_prompt
from phifleet.engine.structured_output import response_format_of
from phifleet.engine.tiny.build import review_schema
from phifleet.engine.tiny.corpus import reviews
from phifleet.engine.types import GenerationRequest, SamplingParams

SCHEMA = review_schema(["sentiment", "product"], ["positive", "negative", "neutral"])
REVIEW_FORMAT = {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}}
TEXTS = [r.text for r in reviews(24, seed=7, held_out=True)]


def ask(text: str, fmt: dict | None = REVIEW_FORMAT, schema: dict = SCHEMA, **params: object) -> GenerationRequest:
    prompt = extraction_prompt(text, json.dumps(schema))
    sampling = SamplingParams(
        max_tokens=params.pop("max_tokens", 64), response_format=response_format_of(fmt), **params
    )
    return GenerationRequest(prompt, sampling)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_object_validates_against_the_schema(engine, temperature):
    """24 held-out reviews (templates and products the model never saw), greedy and sampled at temperature 1."""
    results = engine.generate([ask(t, temperature=temperature, seed=i) for i, t in enumerate(TEXTS)])
    for text, result in zip(TEXTS, results, strict=True):
        assert result.finish_reason == "stop", (text, result.text)
        obj = json.loads(result.text)
        jsonschema.validate(obj, SCHEMA)
        assert list(obj) == ["sentiment", "product"]  # the schema's order, as at OpenAI


def test_the_tiny_model_fills_the_enum_it_was_taught(engine):
    """Not just valid: on 30 held-out reviews the greedy sentiment is the review's label (phi4-tiny learnt review ->
    JSON in its training mix; 29/30 when written). It cannot copy an unseen product name (two layers, 128 wide):
    ``product`` is a well-formed string, the grammar's guarantee, not a right answer."""
    data = reviews(30, seed=11, held_out=True)
    results = engine.generate([ask(r.text, temperature=0.0) for r in data])
    objs = [json.loads(r.text) for r in results]
    right = sum(o["sentiment"] == r.label for o, r in zip(objs, data, strict=True))
    assert right >= 26, (right, objs[:5])
    assert all(isinstance(o["product"], str) and o["product"] for o in objs)


def test_constrained_and_free_rows_share_steps_without_touching_each_other(engine):
    """A free row's greedy tokens are the same alone and beside constrained rows: masks apply to their rows only."""
    free = GenerationRequest(
        extraction_prompt(TEXTS[0], json.dumps(SCHEMA)), SamplingParams(max_tokens=24, temperature=0.0)
    )
    (alone,) = engine.generate([free])
    mixed = engine.generate([ask(TEXTS[1], temperature=0.0), free, ask(TEXTS[2], temperature=0.0)])
    assert mixed[1].token_ids == alone.token_ids
    jsonschema.validate(json.loads(mixed[0].text), SCHEMA)
    jsonschema.validate(json.loads(mixed[2].text), SCHEMA)


def test_an_object_cut_by_max_tokens_ends_with_length_not_as_valid(engine):
    (cut,) = engine.generate([ask(TEXTS[3], temperature=0.0, max_tokens=4)])
    assert cut.finish_reason == "length" and cut.completion_tokens == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.text)


def test_json_object_mode_gives_an_object(engine):
    results = engine.generate([ask(t, fmt={"type": "json_object"}, temperature=0.0) for t in TEXTS[:4]])
    for r in results:
        assert r.finish_reason == "stop" and isinstance(json.loads(r.text), dict)


def test_enum_only_schema_picks_a_value_even_sampled_hot(engine):
    schema = review_schema(["sentiment"], ["positive", "negative"])
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    results = engine.generate([ask(t, fmt, schema, temperature=2.0, seed=i) for i, t in enumerate(TEXTS[:8])])
    assert {json.loads(r.text)["sentiment"] for r in results} <= {"positive", "negative"}


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, 'Unsupported type "strin"'),
        ({"type": "string", "pattern": "(["}, "Regex parsing error"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum greater than maximum"),
    ],
)
def test_a_schema_that_cannot_compile_is_the_requests_error(engine, schema, reason):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(InvalidRequestError) as err:
        engine.prepare(ask("text", fmt, schema))
    assert err.value.param == "response_format" and reason in err.value.message
    assert "/project/cpp" not in err.value.message  # xgrammar's source position is no news to a client
    (ok,) = engine.generate([ask(TEXTS[0], temperature=0.0)])  # the engine goes on
    jsonschema.validate(json.loads(ok.text), SCHEMA)


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ("json", "response_format"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": []}}, "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}}, "response_format.json_schema.strict"),
        ({"type": "json_schema", "json_schema": {"name": "a", "shema": {}}}, "response_format.json_schema.shema"),
        ({"type": "json_object", "json_schema": {}}, "response_format.json_schema"),
    ],
)
def test_response_format_shapes_are_checked_naming_the_field(value, param):
    with pytest.raises(InvalidRequestError) as err:
        response_format_of(value)
    assert err.value.param == param


def test_text_and_null_mean_free_text():
    assert response_format_of(None) is None and response_format_of({"type": "text"}) is None


def test_the_static_engine_refuses_response_format(static_engine):
    with pytest.raises(InvalidRequestError, match="continuous engine"):
        static_engine.prepare(ask("text"))


def test_control_tokens_are_never_sampled_inside_an_object(engine):
    """Every control token pushed to +100 by logit_bias: none appears inside an object (xgrammar alone lets them
    into strings, where the detokenizer would drop them silently and the text differ from what the grammar checked:
    unbanned, these requests filled their product string with <|im_sep|> until max_tokens)."""
    specials = sorted(set(engine.tokenizer.all_special_ids) - set(engine.eos_ids))
    bias = {i: 100.0 for i in specials}
    results = engine.generate([ask(t, temperature=0.0, logit_bias=bias, max_tokens=40) for t in TEXTS[:3]])
    for r in results:
        assert r.finish_reason == "stop" and not set(specials) & set(r.token_ids), r.token_ids
        jsonschema.validate(json.loads(r.text), SCHEMA)


def test_a_grammar_that_cannot_fill_its_mask_fails_its_row_alone(engine):
    import torch

    from phifleet.engine.structured_output import mask_logits

    good, bad = engine.prepare(ask(TEXTS[0])), engine.prepare(ask(TEXTS[1]))

    def broken(bitmask, row):
        raise RuntimeError("matcher broke")

    bad.grammar.fill = broken
    logits = torch.zeros(2, engine.hf_model.config.vocab_size)
    masked = mask_logits(logits, [(0, good), (1, bad)])
    assert isinstance(bad.error, RuntimeError) and good.error is None
    assert torch.isinf(masked[0]).any() and not torch.isinf(masked[1]).any()  # the good row masked, the bad untouched
