"""Every parameter of OpenAI's chat and completions APIs is implemented or refused by name, from one table."""

import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params

from phifleet.protocol.errors import OpenAIError
from phifleet.protocol.requests import (
    PARAMETERS,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    parameter_table_markdown,
    parameters,
    parse_request,
)

CHAT, CMPL = "/v1/chat/completions", "/v1/completions"
BASE = {CHAT: {"messages": [{"role": "user", "content": "x"}]}, CMPL: {"prompt": "x"}}
EXTENSIONS = {"ignore_eos", "top_k"}  # vLLM's, not OpenAI's


def refuse(url: str, body: dict) -> OpenAIError:
    with pytest.raises(OpenAIError) as err:
        parse_request(url, body)
    assert err.value.status == 400 and err.value.type == "invalid_request_error"
    return err.value


def test_the_table_covers_every_openai_parameter():
    chat_api = set(chat_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"}
    cmpl_api = set(completion_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"}
    assert set(parameters("chat")) == chat_api | EXTENSIONS
    assert set(parameters("completions")) == cmpl_api | EXTENSIONS


def test_implemented_parameters_are_exactly_the_models_fields():
    for scope, model in (("chat", ChatCompletionRequest), ("completions", CompletionRequest), ("message", ChatMessage)):
        implemented = {name for name, p in parameters(scope).items() if p.implemented}
        assert implemented == set(model.model_fields), scope


def test_markdown_table_has_a_row_per_parameter():
    table = parameter_table_markdown()
    rows = table.splitlines()[2:]
    assert len(rows) == len(PARAMETERS) and all(r.startswith("| `") and r.count(" | ") == 3 for r in rows)
    assert "| `tools` | chat | refused unless `null` or `[]` | Phi-4 has no tool-call format |" in rows
    assert any(r.startswith("| `messages[].name` | chat | refused unless `null` |") for r in rows)
    assert any(r.startswith("| `best_of` | completions | refused unless `null` or `1` or `n` |") for r in rows)


CHANGERS = ([{"type": "function"}], "auto", True, 0.5, "x", {"type": "json_object"}, ["audio"])  # not no-ops
REFUSED = [
    (url, p.name, next(v for v in CHANGERS if not p.noop(v, {})))
    for p in PARAMETERS
    if not p.implemented and p.scopes != {"message"}
    for url in (CHAT, CMPL)
    if ("chat" if url == CHAT else "completions") in p.scopes
]


@pytest.mark.parametrize(("url", "name", "value"), REFUSED)
def test_refused_parameters_are_400s_naming_them(url, name, value):
    err = refuse(url, {**BASE[url], name: value})
    assert err.param == name and err.message.startswith(f"{name}: not supported: ") and "(accepted: null" in err.message


@pytest.mark.parametrize(
    ("url", "name", "value"),
    [
        (CHAT, "tools", None),
        (CHAT, "tools", []),
        (CHAT, "tool_choice", "none"),
        (CHAT, "functions", []),
        (CHAT, "function_call", "none"),
        (CHAT, "parallel_tool_calls", None),
        (CHAT, "response_format", {"type": "text"}),
        (CHAT, "frequency_penalty", 0),
        (CMPL, "frequency_penalty", 0.0),
        (CHAT, "presence_penalty", 0),
        (CHAT, "modalities", ["text"]),
        (CHAT, "service_tier", "auto"),
        (CHAT, "service_tier", "default"),
        (CHAT, "store", False),
        (CHAT, "metadata", {}),
        (CHAT, "reasoning_effort", None),
        (CMPL, "suffix", ""),
        (CMPL, "best_of", 1),
    ],
)
def test_refused_parameters_pass_at_their_no_op_values(url, name, value):
    parse_request(url, {**BASE[url], name: value})


@pytest.mark.parametrize(
    ("url", "name", "value"),
    [
        (CHAT, "frequency_penalty", False),  # false is not 0
        (CHAT, "store", 0),  # 0 is not false
        (CHAT, "store", True),
        (CHAT, "response_format", {"type": "json_schema"}),
        (CHAT, "modalities", ["text", "audio"]),
        (CHAT, "service_tier", "flex"),
        (CMPL, "best_of", 2),
        (CMPL, "suffix", "end"),
        (CMPL, "presence_penalty", 0.1),
    ],
)
def test_values_that_change_the_output_are_refused(url, name, value):
    assert refuse(url, {**BASE[url], name: value}).param == name


def test_best_of_equal_to_n_is_a_no_op():
    parse_request(CMPL, {"prompt": "x", "n": 3, "best_of": 3})
    assert refuse(CMPL, {"prompt": "x", "n": 2, "best_of": 3}).param == "best_of"


def test_response_format_takes_openais_three_shapes_and_names_a_bad_field():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    for value in (
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    ):
        parse_request(CHAT, {**BASE[CHAT], "response_format": value})
    err = refuse(CHAT, {**BASE[CHAT], "response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}})
    assert err.param == "response_format" and "json_schema.name" in err.message
    err = refuse(CHAT, {**BASE[CHAT], "response_format": {"type": "json_object"}, "stop": ["}"]})
    assert err.param == "stop"
    assert refuse(CMPL, {**BASE[CMPL], "response_format": {"type": "json_object"}}).param == "response_format"


@pytest.mark.parametrize(
    ("url", "name"),
    [(CHAT, "frobnicate"), (CMPL, "min_p"), (CHAT, "repetition_penalty"), (CHAT, "echo"), (CMPL, "messages")],
)
def test_unknown_fields_are_400s_naming_them(url, name):
    err = refuse(url, {**BASE[url], name: 1})
    assert err.param == name and err.message == f"Unrecognized request argument supplied: {name}"


def test_endpoint_specific_parameters_are_unknown_on_the_other_endpoint():
    assert refuse(CHAT, {**BASE[CHAT], "suffix": "x"}).message.startswith("Unrecognized request argument")
    assert refuse(CMPL, {**BASE[CMPL], "tools": []}).message.startswith("Unrecognized request argument")
    assert refuse(CMPL, {**BASE[CMPL], "top_logprobs": 2}).param == "top_logprobs"


def test_unknown_keys_inside_objects_are_named():
    err = refuse(CHAT, {"messages": [{"role": "user", "content": "x", "foo": 1}]})
    assert err.param == "messages[0].foo" and err.message.startswith("Unrecognized request argument")
    err = refuse(CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache": 1}]}]})
    assert err.param == "messages[0].content[0].cache"
    err = refuse(CHAT, {**BASE[CHAT], "stream": True, "stream_options": {"include_obfuscation": False}})
    assert err.param == "stream_options.include_obfuscation"


def test_huge_unknown_keys_are_not_echoed_whole():
    err = refuse(CHAT, {**BASE[CHAT], "k" * 10_000: 1})
    assert len(err.message) < 200 and len(err.param) < 100


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "alice"), ("tool_calls", [{"id": "1"}]), ("function_call", {"name": "f"}), ("refusal", "no")],
)
def test_refused_message_fields(field, value):
    err = refuse(CHAT, {"messages": [{"role": "assistant", "content": "x", field: value}]})
    assert err.param == f"messages[0].{field}" and "not supported" in err.message


def test_message_fields_pass_at_their_no_op_values():
    # What an SDK's dump of an earlier assistant message carries.
    assistant = {"role": "assistant", "content": "hi", "refusal": None, "tool_calls": [], "function_call": None}
    req = parse_request(CHAT, {"messages": [{"role": "user", "content": "x", "name": None}, assistant]})
    assert req.messages[1].text == "hi"
