"""Stream chunks as the official openai client parses them, from the SSE text the server sends."""

import json

from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from phifleet.protocol.requests import parse_request
from phifleet.protocol.streaming import SSE_DONE, sse


def events(*chunks) -> list[dict]:
    text = "".join(sse(c) for c in chunks)
    assert text.endswith("\n\n") and all(e.startswith("data: ") for e in text.split("\n\n") if e)
    return [json.loads(e.removeprefix("data: ")) for e in text.split("\n\n") if e]


def test_chat_stream_role_text_finish_and_usage_chunks():
    chunks = parse_request("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}).chunk_stream("m")
    role, text, finish, usage = events(
        chunks.role(0), chunks.text(0, "hel"), chunks.finish(0, "stop"), chunks.usage(5, 3)
    )
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text["choices"][0]["delta"] == {"content": "hel"} and "usage" not in text
    assert finish["choices"][0]["delta"] == {} and finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 8
    parsed = [ChatCompletionChunk.model_validate(e) for e in (role, text, finish, usage)]
    assert {p.id for p in parsed} == {chunks.id} and chunks.id.startswith("chatcmpl-")
    assert all(p.object == "chat.completion.chunk" and p.model == "m" for p in parsed)


def test_completion_stream_has_no_role_chunk():
    chunks = parse_request("/v1/completions", {"prompt": "x"}).chunk_stream("m")
    assert chunks.role(0) is None
    text, finish, usage = events(chunks.text(1, "ab"), chunks.finish(1, "length"), chunks.usage(2, 4))
    assert text["choices"][0] == {"index": 1, "text": "ab", "finish_reason": None, "logprobs": None}
    assert finish["choices"][0]["text"] == "" and finish["choices"][0]["finish_reason"] == "length"
    assert Completion.model_validate(usage).usage.completion_tokens == 4
    assert all(e["object"] == "text_completion" and e["id"].startswith("cmpl-") for e in (text, finish, usage))


def test_stream_ends_with_done():
    assert SSE_DONE == "data: [DONE]\n\n"
