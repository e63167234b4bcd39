"""Hostile or broken bodies: strict JSON types, text-only content, lone surrogates, and RequestLimits' bounds,
all refused with a 400 naming the field before any templating or tokenizing."""

import json

import pytest

from phifleet.protocol.errors import OpenAIError
from phifleet.protocol.limits import RequestLimits
from phifleet.protocol.requests import check_json, parse_request

CHAT, CMPL = "/v1/chat/completions", "/v1/completions"
USER = [{"role": "user", "content": "x"}]


def refuse(url: str, body: dict | str, limits: RequestLimits | None = None) -> OpenAIError:
    with pytest.raises(OpenAIError) as err:
        parse_request(url, json.loads(body) if isinstance(body, str) else body, limits=limits)
    assert err.value.status == 400 and err.value.type == "invalid_request_error"
    return err.value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", '"5"'),
        ("max_tokens", "5.0"),
        ("max_tokens", "true"),
        ("n", "2.0"),
        ("n", '"2"'),
        ("seed", '"1"'),
        ("seed", "1.5"),
        ("stream", '"true"'),
        ("stream", "1"),
        ("temperature", '"0.5"'),
        ("temperature", "true"),
        ("temperature", "NaN"),
        ("top_p", "Infinity"),
        ("top_k", '"3"'),
        ("ignore_eos", '"yes"'),
        ("logprobs", "1"),
        ("top_logprobs", "1.0"),
        ("user", "3"),
        ("model", "3"),
        ("stream_options", '{"include_usage": "true"}'),
        ("stream_options", '"usage"'),
    ],
)
def test_json_types_are_strict(field, value):
    body = f'{{"messages": [{{"role": "user", "content": "x"}}], "stream": true, "{field}": {value}}}'
    if field == "stream":
        body = f'{{"messages": [{{"role": "user", "content": "x"}}], "stream": {value}}}'
    err = refuse(CHAT, body)
    assert err.param.startswith(field) and err.message.startswith(err.param)


def test_an_integer_is_a_number():
    params = parse_request(CMPL, json.loads('{"prompt": "x", "temperature": 1, "top_p": 1}')).sampling()
    assert (params.temperature, params.top_p) == (1.0, 1.0) and isinstance(params.temperature, float)
    bias = parse_request(CMPL, json.loads('{"prompt": "x", "logit_bias": {"5": 100, "6": -2.5}}')).token_bias
    assert bias == {5: 100.0, 6: -2.5}


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "text", "text": None}], "messages[0].content[0].text"),
        ([{"type": "text"}], "messages[0].content[0].text"),
        ([{"type": "text", "text": 5}], "messages[0].content[0].text"),
        (
            [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}}],
            "messages[0].content[1].type",
        ),
        ([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}], "messages[0].content[0].type"),
        ([{"type": "file", "file": {"file_id": "f"}}], "messages[0].content[0].type"),
        ([{"text": "no type"}], "messages[0].content[0].type"),
        (["a string in a list"], "messages[0].content[0]"),
        (None, "messages[0].content"),
        (5, "messages[0].content"),
    ],
)
def test_content_is_text_only(content, param):
    err = refuse(CHAT, {"messages": [{"role": "user", "content": content}]})
    assert err.param == param, err.message
    if param.endswith(".type") and "type" in content[-1]:
        assert "Phi-4 reads text only" in err.message


def test_text_parts_are_joined():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    req = parse_request(CHAT, {"messages": [{"role": "user", "content": parts}]})
    assert "<|im_sep|>ab<|im_end|>" in req.prompt_text()


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        (CHAT, '{"messages": [{"role": "user", "content": "bad \\ud800 text"}]}', "messages[0].content"),
        (CHAT, '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}', "messages[0].content[0].text"),  # noqa: E501
        (CMPL, '{"prompt": "\\ud83d"}', "prompt"),
        (CMPL, '{"prompt": "x", "stop": ["ok", "\\ud800"]}', "stop[1]"),
        (CMPL, '{"prompt": "x", "user": "\\ud800"}', "user"),
        (CMPL, '{"prompt": "x", "model": "\\ud800"}', "model"),
        (CMPL, '{"prompt": "x", "\\ud800": 1}', "body"),
        (CHAT, '{"messages": [{"role": "user", "content": "x", "\\udc00": 1}]}', "messages[0]"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_400s_naming_the_field(url, body, param):
    err = refuse(url, body)
    assert err.param == param and "not valid Unicode" in err.message
    err.message.encode("utf-8")  # the answer itself must encode


def test_a_surrogate_pair_is_fine():
    req = parse_request(CMPL, json.loads('{"prompt": "smile \\ud83d\\ude00"}'))
    assert req.prompt == "smile \U0001f600"


def test_json_nesting_is_bounded():
    deep = {"prompt": "x", "user": json.loads("[" * 40 + "]" * 40)}
    err = refuse(CMPL, deep)
    assert err.param == "body" and "nested deeper than 32" in err.message
    check_json(json.loads("[" * 32 + "]" * 32), 32)
    with pytest.raises(OpenAIError):
        check_json(json.loads("[" * 33 + "]" * 33), 32)


def test_roles():
    body = {"messages": [{"role": r, "content": r} for r in ("system", "developer", "user", "assistant")]}
    text = parse_request(CHAT, body).prompt_text()
    assert text.count("<|im_start|>system<|im_sep|>") == 2 and "<|im_start|>developer" not in text
    for role in ("tool", "function"):
        err = refuse(CHAT, {"messages": [{"role": role, "content": "x"}]})
        assert err.param == "messages[0].role" and "no tool-call format" in err.message
    err = refuse(CHAT, {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]})
    assert err.param == "messages[0].tool_call_id" and "no tool-call format" in err.message


# --- RequestLimits ------------------------------------------------------------------------------------------------
def test_message_count_is_bounded_before_validation():
    limits = RequestLimits(max_messages=3)
    parse_request(CHAT, {"messages": USER * 3}, limits=limits)
    err = refuse(CHAT, {"messages": USER * 4}, limits)
    assert err.param == "messages" and "at most 3 messages" in err.message


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        (CHAT, {"messages": [{"role": "system", "content": "a" * 6}, {"role": "user", "content": "b" * 5}]}, "messages"),  # noqa: E501
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 11}]}]}, "messages"),
        (CMPL, {"prompt": "a" * 11}, "prompt"),
    ],
)  # fmt: skip
def test_prompt_characters_are_bounded(url, body, param):
    err = refuse(url, body, RequestLimits(max_prompt_chars=10))
    assert (err.param, err.code) == (param, "context_length_exceeded") and "11 characters" in err.message


def test_prompt_at_the_character_bound_passes():
    parse_request(CMPL, {"prompt": "a" * 10}, limits=RequestLimits(max_prompt_chars=10))


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"stop": [""]}, "stop", "1 to 256 characters"),
        ({"stop": ""}, "stop", "1 to 256 characters"),
        ({"stop": ["ok", "x" * 257]}, "stop", "1 to 256 characters"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"n": 17}, "n", "at most 16"),
        ({"seed": 2**64}, "seed", "less than or equal to"),
        ({"seed": 2**63}, "seed", "less than or equal to"),
        ({"seed": -(2**63) - 1}, "seed", "greater than or equal to"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"max_tokens": -1}, "max_tokens", "greater than or equal to 1"),
        ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias", "at most 300"),
        ({"logit_bias": {"abc": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"-1": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"1.5": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"²": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"9" * 5000: 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "[-100, 100]"),
        ({"logit_bias": {"5": "1"}}, "logit_bias", "number"),
        ({"logit_bias": ["5"]}, "logit_bias", "dictionary"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream"),
        ({"echo": True, "logprobs": 0}, "echo", "logprobs"),
        ({"logprobs": 6}, "logprobs", "less than or equal to 5"),
    ],
)  # fmt: skip
def test_bounds_name_the_field(body, param, says):
    err = refuse(CMPL, {"prompt": "x", **body})
    assert err.param.startswith(param) and says in err.message, err.message


def test_bounds_of_chat_logprobs():
    assert refuse(CHAT, {"messages": USER, "top_logprobs": 2}).param == "top_logprobs"
    assert refuse(CHAT, {"messages": USER, "logprobs": False, "top_logprobs": 2}).param == "top_logprobs"
    assert refuse(CHAT, {"messages": USER, "logprobs": True, "top_logprobs": 21}).param == "top_logprobs"
    req = parse_request(CHAT, {"messages": USER, "logprobs": True, "top_logprobs": 20})
    assert req.sampling().logprobs == 20
    assert parse_request(CHAT, {"messages": USER, "logprobs": True}).sampling().logprobs == 0
    assert parse_request(CHAT, {"messages": USER, "logprobs": False}).sampling().logprobs is None
    assert parse_request(CMPL, {"prompt": "x", "logprobs": 0}).sampling().logprobs == 0


def test_limits_are_configurable():
    limits = RequestLimits(max_n=2, max_stop_sequences=1, max_stop_chars=3, max_logit_bias=1)
    assert refuse(CMPL, {"prompt": "x", "n": 3}, limits).param == "n"
    assert refuse(CMPL, {"prompt": "x", "stop": ["a", "b"]}, limits).param == "stop"
    assert refuse(CMPL, {"prompt": "x", "stop": "abcd"}, limits).param == "stop"
    assert refuse(CMPL, {"prompt": "x", "logit_bias": {"1": 1, "2": 1}}, limits).param == "logit_bias"
    req = parse_request(CMPL, {"prompt": "x", "n": 2, "stop": "abc", "logit_bias": {"1": 1}}, limits=limits)
    assert len(req.generation_requests()) == 2


def test_seed_bounds_are_int64():
    for seed in (2**63 - 1, -(2**63), 0):
        assert parse_request(CMPL, {"prompt": "x", "seed": seed}).sampling().seed == seed


def test_the_body_is_not_changed():
    body = {"messages": [{"role": "user", "content": "x", "name": None}], "tools": [], "stop": "s"}
    snapshot = json.dumps(body)
    parse_request(CHAT, body)
    assert json.dumps(body) == snapshot  # batch jobs re-serialize the original body


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        (CHAT, {"messages": None}, "messages"),
        (CHAT, {"messages": [{"role": None, "content": "x"}]}, "messages[0].role"),
        (CHAT, {"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        (CMPL, {"prompt": None}, "prompt"),
    ],
)
def test_null_is_no_value_for_a_required_field(url, body, param):
    err = refuse(url, body)
    assert err.param == param and "Field required" not in err.message
