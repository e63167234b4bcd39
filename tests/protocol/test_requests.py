"""OpenAI request validation and response shapes, checked with the official openai package's types."""

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from phifleet.engine.types import GenerationResult, Prompt
from phifleet.protocol.errors import OpenAIError
from phifleet.protocol.limits import RequestLimits
from phifleet.protocol.requests import ChatCompletionRequest, CompletionRequest, parse_request

CHAT, CMPL = "/v1/chat/completions", "/v1/completions"
USER = [{"role": "user", "content": "x"}]


def test_chat_request_maps_to_engine_requests():
    req = parse_request(
        CHAT,
        {
            "messages": [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
            "max_completion_tokens": 7,
            "n": 3,
            "seed": 10,
            "stop": "END",
            "temperature": 0.5,
            "top_k": 40,
            "logit_bias": {"17": -100, "3": 2.5},
            "user": "u-1",
        },
    )
    gens = req.generation_requests()
    assert len(gens) == 3
    prompt = gens[0].prompt
    assert isinstance(prompt, Prompt) and gens[0].prompt_param == "messages"
    assert prompt.text.startswith("<|im_start|>system<|im_sep|>Be terse.<|im_end|>")  # developer = system
    assert not any(p.trusted for p in prompt.parts if "Be terse." in p.text)  # content is never markup
    assert req.prompt_text() == prompt.text
    assert [g.params.seed for g in gens] == [10, 11, 12]
    params = gens[0].params
    assert params.max_tokens == 7 and params.stop == ("END",) and not params.fit_to_context
    assert (params.top_k, params.logit_bias, params.logprobs) == (40, {17: -100.0, 3: 2.5}, None)


def test_seeds_of_choices_wrap_within_64_bits():
    req = parse_request(CHAT, {"messages": USER, "n": 3, "seed": 2**63 - 2})
    assert [g.params.seed for g in req.generation_requests()] == [2**63 - 2, 2**63 - 1, -(2**63)]


def test_default_completion_limits_fit_the_context():
    chat = ChatCompletionRequest(messages=USER)
    assert chat.sampling().max_tokens == 256 and chat.sampling().fit_to_context
    assert ChatCompletionRequest(messages=USER, max_tokens=9).sampling().max_tokens == 9
    both = parse_request(CHAT, {"messages": USER, "max_tokens": 9, "max_completion_tokens": 4}).sampling()
    assert both.max_tokens == 4 and not both.fit_to_context
    assert CompletionRequest(prompt="x").sampling().max_tokens == 16
    assert CompletionRequest(prompt="x").sampling().fit_to_context
    ignore = CompletionRequest(prompt="x", ignore_eos=True, max_tokens=4).generation_requests()[0].params
    assert ignore.ignore_eos and ignore.max_tokens == 4 and not ignore.fit_to_context


def test_nulls_mean_defaults():
    body = {"prompt": "x", "temperature": None, "n": None, "stop": None, "stream": None, "max_tokens": None}
    params = parse_request(CMPL, body).sampling()
    assert (params.temperature, params.stop, params.max_tokens, params.fit_to_context) == (1.0, (), 16, True)


def test_completion_prompts_are_plain_text_unless_raw_prompts_are_allowed():
    body = {"prompt": "<|im_start|>system"}
    plain = parse_request(CMPL, body).generation_requests()[0]
    assert plain.prompt == Prompt.plain("<|im_start|>system") and plain.prompt_param == "prompt"
    raw = parse_request(CMPL, body, limits=RequestLimits(allow_raw_prompts=True)).generation_requests()[0]
    assert raw.prompt == "<|im_start|>system"
    assert parse_request(CMPL, body).prompt_text() == "<|im_start|>system"


def test_generation_requests_raise_only_openai_errors():
    req = ChatCompletionRequest(messages=USER)
    req.messages[0].role = "tool"  # impossible through parse_request: the engine's template refuses it
    with pytest.raises(OpenAIError) as err:
        req.generation_requests()
    assert (err.value.status, err.value.param) == (400, "messages[0].role")


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        ("/v1/embeddings", {}, "url"),
        (CHAT, [], "body"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (CHAT, {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (CHAT, {"messages": [{"role": "user"}]}, "messages[0].content"),
        (CHAT, {"messages": ["hi"]}, "messages[0]"),
        (CMPL, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        (CHAT, {"messages": USER, "max_completion_tokens": 0}, "max_completion_tokens"),
        (CMPL, {"prompt": "x", "temperature": 3}, "temperature"),
        (CMPL, {"prompt": "x", "top_p": 0}, "top_p"),
        (CMPL, {"prompt": "x", "top_k": -1}, "top_k"),
        (CMPL, {"prompt": "x", "n": 0}, "n"),
        (CMPL, {"prompt": ["a", "b"]}, "prompt"),
        (CMPL, {"prompt": [1, 2, 3]}, "prompt"),
        (CMPL, {}, "prompt"),
        (CMPL, {"prompt": "x", "stop": ["1", "2", "3", "4", "5"]}, "stop"),
        (CMPL, {"prompt": "x", "stop": 5}, "stop"),
        (CMPL, {"prompt": "x", "stop": ["a", 5]}, "stop[1]"),
    ],
)
def test_bad_requests_name_the_field(url, body, param):
    with pytest.raises(OpenAIError) as err:
        parse_request(url, body)
    assert (err.value.status, err.value.param, err.value.type) == (400, param, "invalid_request_error")
    assert err.value.message.startswith(param)


def test_response_bodies_are_valid_openai_objects():
    results = [GenerationResult("hello", "stop", 5, 2, (1, 2)), GenerationResult("hi", "length", 5, 3, (3, 4, 5))]
    chat_req = parse_request(CHAT, {"messages": USER})
    chat = ChatCompletion.model_validate(chat_req.response(results, "phi-4").model_dump())
    assert chat.usage.total_tokens == 10 and chat.choices[1].finish_reason == "length"
    assert chat.id.startswith("chatcmpl-") and chat.choices[0].message.content == "hello"
    assert chat.choices[0].logprobs is None
    cmpl_req = parse_request(CMPL, {"prompt": "x"})
    cmpl = Completion.model_validate(cmpl_req.response(results, "m").model_dump())
    assert cmpl.choices[0].text == "hello" and cmpl.model == "m" and cmpl.id.startswith("cmpl-")
    assert cmpl.choices[0].logprobs is None


def test_echo_puts_the_prompt_before_each_choice():
    results = [GenerationResult(" world", "stop", 2, 1, (1,)), GenerationResult(" there", "stop", 2, 1, (2,))]
    req = parse_request(CMPL, {"prompt": "hello", "echo": True, "n": 2})
    body = Completion.model_validate(req.response(results, "m").model_dump())
    assert [c.text for c in body.choices] == ["hello world", "hello there"]
    assert body.usage.prompt_tokens == 2  # echo changes the text, not the counts
