"""Logprobs in answers and stream chunks, in the shapes the official openai client parses."""

import json

from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_choice import Logprobs

from phifleet.engine.types import GenerationResult, TokenLogprob
from phifleet.protocol.requests import parse_request
from phifleet.protocol.responses import LOGPROB_FLOOR
from phifleet.protocol.streaming import sse

CHAT, CMPL = "/v1/chat/completions", "/v1/completions"


def tok(token_id: int, text: str, logprob: float, top=(), raw: bytes | None = None) -> TokenLogprob:
    data = raw if raw is not None else text.encode()
    return TokenLogprob(token_id, text, tuple(data), logprob, tuple(top))


# "Hé!" where "é" (2 bytes) is split across two tokens, each shown with a replacement character.
HI = tok(1, "H", -0.1, [tok(1, "H", -0.1), tok(2, "J", -2.5)])
E1 = tok(3, "\ufffd", -0.2, [tok(3, "\ufffd", -0.2)], raw=b"\xc3")
E2 = tok(4, "\ufffd", -0.3, [tok(4, "\ufffd", -0.3)], raw=b"\xa9")
BANG = tok(5, "!", float("-inf"), [tok(6, "?", -0.01)])
TOKENS = (HI, E1, E2, BANG)
RESULT = GenerationResult("Hé!", "stop", 3, 4, (1, 3, 4, 5), logprobs=TOKENS)


def test_chat_logprobs():
    req = parse_request(CHAT, {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 2})
    body = req.response([RESULT], "m").model_dump()
    json.dumps(body, allow_nan=False)  # what the server's JSONResponse demands
    chat = ChatCompletion.model_validate(body)
    content = chat.choices[0].logprobs.content
    assert [c.token for c in content] == ["H", "\ufffd", "\ufffd", "!"]
    assert content[0].bytes == [72] and content[1].bytes == [0xC3] and content[0].logprob == -0.1
    assert [t.token for t in content[0].top_logprobs] == ["H", "J"] and content[0].top_logprobs[1].logprob == -2.5
    assert content[3].logprob == LOGPROB_FLOOR  # -inf is no JSON number
    assert chat.choices[0].logprobs.refusal is None


def test_completion_logprobs_and_text_offsets():
    req = parse_request(CMPL, {"prompt": "x", "logprobs": 1})
    body = req.response([RESULT], "m").model_dump()
    json.dumps(body, allow_nan=False)
    lp = Completion.model_validate(body).choices[0].logprobs
    assert lp.tokens == ["H", "\ufffd", "\ufffd", "!"]
    assert lp.token_logprobs == [-0.1, -0.2, -0.3, LOGPROB_FLOOR]
    assert lp.top_logprobs[0] == {"H": -0.1, "J": -2.5}
    assert lp.top_logprobs[3] == {"?": -0.01, "!": LOGPROB_FLOOR}  # the sampled token is always there
    assert lp.text_offset == [0, 1, 1, 2]  # both halves of "é" start at its character
    assert "Hé!"[lp.text_offset[3]] == "!"


def test_no_logprobs_asked_none_given():
    plain = GenerationResult("a", "stop", 1, 1, (1,))
    chat = parse_request(CHAT, {"messages": [{"role": "user", "content": "x"}]}).response([plain], "m")
    assert chat.model_dump()["choices"][0]["logprobs"] is None
    cmpl = parse_request(CMPL, {"prompt": "x"}).response([plain], "m")
    assert cmpl.model_dump()["choices"][0]["logprobs"] is None


def events(*chunks) -> list[dict]:
    return [json.loads(e.removeprefix("data: ")) for e in "".join(sse(c) for c in chunks).split("\n\n") if e]


def test_chat_stream_chunks_carry_their_tokens_logprobs():
    req = parse_request(
        CHAT, {"messages": [{"role": "user", "content": "x"}], "stream": True, "logprobs": True, "top_logprobs": 1}
    )
    chunks = req.chunk_stream("m")
    role, first, second, finish = events(
        chunks.role(0),
        chunks.text(0, "H", logprobs=TOKENS[:1]),
        chunks.text(0, "é!", TOKENS[1:]),
        chunks.finish(0, "stop"),
    )
    parsed = [ChatCompletionChunk.model_validate(e) for e in (role, first, second, finish)]
    assert parsed[0].choices[0].logprobs is None and parsed[3].choices[0].logprobs is None
    assert [t.token for t in parsed[1].choices[0].logprobs.content] == ["H"]
    assert [t.logprob for t in parsed[2].choices[0].logprobs.content] == [-0.2, -0.3, LOGPROB_FLOOR]


def test_completion_stream_offsets_run_on_across_chunks():
    chunks = parse_request(CMPL, {"prompt": "x", "stream": True, "logprobs": 0}).chunk_stream("m")
    assert chunks.role(0) is None
    a, b, other = events(
        chunks.text(0, "H", TOKENS[:2]), chunks.text(0, "é!", TOKENS[2:]), chunks.text(1, "H", TOKENS[:1])
    )
    for e in (a, b, other):  # a streamed choice has no finish_reason yet, which Completion requires: parts only
        Logprobs.model_validate(e["choices"][0]["logprobs"])
    assert a["choices"][0]["logprobs"]["text_offset"] == [0, 1]
    assert b["choices"][0]["logprobs"]["text_offset"] == [1, 2]
    assert other["choices"][0]["logprobs"]["text_offset"] == [0]  # each choice counts its own text
    assert b["choices"][0]["logprobs"]["top_logprobs"][1] == {"?": -0.01, "!": LOGPROB_FLOOR}


def test_completion_stream_echo_opens_each_choice_with_the_prompt():
    chunks = parse_request(CMPL, {"prompt": "Once", "stream": True, "echo": True, "n": 2}).chunk_stream("m")
    opening, text = events(chunks.role(1), chunks.text(1, " upon"))
    assert opening["choices"][0] == {"index": 1, "text": "Once", "finish_reason": None, "logprobs": None}
    assert text["choices"][0]["text"] == " upon" and text["choices"][0]["logprobs"] is None
