"""OpenAI request validation and response shapes, checked with the official openai package's types."""

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from phifleet.engine.types import GenerationResult
from phifleet.protocol.errors import OpenAIError
from phifleet.protocol.requests import ChatCompletionRequest, CompletionRequest, parse_request


def test_chat_request_maps_to_engine_requests():
    req = parse_request(
        "/v1/chat/completions",
        {
            "messages": [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
            "max_completion_tokens": 7,
            "n": 3,
            "seed": 10,
            "stop": "END",
            "temperature": 0.5,
            "unknown": 1,
        },
    )
    gens = req.generation_requests()
    assert len(gens) == 3
    assert gens[0].prompt.startswith("<|im_start|>system<|im_sep|>Be terse.<|im_end|>")  # developer = system
    assert [g.params.seed for g in gens] == [10, 11, 12]
    assert all(g.params.max_tokens == 7 and g.params.stop == ("END",) for g in gens)


def test_default_completion_limits_follow_openai():
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}])
    assert chat.sampling().max_tokens == 256
    assert ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], max_tokens=9).sampling().max_tokens == 9
    assert CompletionRequest(prompt="x").sampling().max_tokens == 16
    ignore = CompletionRequest(prompt="x", ignore_eos=True, max_tokens=4).generation_requests()[0].params
    assert ignore.ignore_eos and ignore.max_tokens == 4


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        ("/v1/embeddings", {}, "url"),
        ("/v1/chat/completions", [], "body"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "temperature": 3}, "temperature"),
        ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
        ("/v1/completions", {"prompt": "x", "stop": ["1", "2", "3", "4", "5"]}, "stop"),
    ],
)
def test_bad_requests_name_the_field(url, body, param):
    with pytest.raises(OpenAIError) as err:
        parse_request(url, body)
    assert (err.value.status, err.value.param, err.value.type) == (400, param, "invalid_request_error")
    assert err.value.message.startswith(param)


def test_response_bodies_are_valid_openai_objects():
    results = [GenerationResult("hello", "stop", 5, 2, (1, 2)), GenerationResult("hi", "length", 5, 3, (3, 4, 5))]
    chat_req = parse_request("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    chat = ChatCompletion.model_validate(chat_req.response(results, "phi-4").model_dump())
    assert chat.usage.total_tokens == 10 and chat.choices[1].finish_reason == "length"
    assert chat.id.startswith("chatcmpl-") and chat.choices[0].message.content == "hello"
    cmpl_req = parse_request("/v1/completions", {"prompt": "x"})
    cmpl = Completion.model_validate(cmpl_req.response(results, "m").model_dump())
    assert cmpl.choices[0].text == "hello" and cmpl.model == "m" and cmpl.id.startswith("cmpl-")
