"""Non-streaming answers: chat.completion and text_completion objects with their usage and logprobs."""

from __future__ import annotations

import codecs
import math
import time
import uuid
from collections.abc import Sequence
from typing import Literal, Self

from pydantic import BaseModel, Field

from phifleet.engine.types import FinishReason, GenerationResult, TokenLogprob

#: What OpenAI reports for a token the model all but rules out; also keeps -inf out of JSON, which has no infinity.
LOGPROB_FLOOR = -9999.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    @classmethod
    def of_results(cls, results: Sequence[GenerationResult]) -> Usage:
        """The ``n`` choices share one prompt: counted once; their completions add up."""
        return cls.of(results[0].prompt_tokens, sum(r.completion_tokens for r in results))


def _logprob(value: float) -> float:
    return max(value, LOGPROB_FLOOR) if math.isfinite(value) else LOGPROB_FLOOR


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None

    @classmethod
    def of(cls, t: TokenLogprob, **more: object) -> Self:
        return cls(token=t.token, logprob=_logprob(t.logprob), bytes=list(t.bytes), **more)


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """A chat choice's (or chunk's) ``logprobs``: one entry per generated token, its alternatives within."""

    content: list[ChatTokenLogprob] | None
    refusal: None = None

    @classmethod
    def of(cls, tokens: Sequence[TokenLogprob] | None) -> ChatLogprobs | None:
        if tokens is None:
            return None
        return cls(content=[ChatTokenLogprob.of(t, top_logprobs=[TopLogprob.of(a) for a in t.top]) for t in tokens])


class TextOffsets:
    """Character offset of each next token in the returned text, from ``start`` (the echoed prompt's length).

    Tokens are bytes and a character may span several: the offsets follow an incremental UTF-8 decoder, so a
    token that completes a character shares the offset of the token that began it.
    """

    def __init__(self, start: int = 0) -> None:
        self.position = start
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def take(self, token: TokenLogprob) -> int:
        offset = self.position
        data = bytes(token.bytes) if token.bytes else token.token.encode("utf-8", "replace")
        self.position += len(self._decoder.decode(data))
        return offset


class CompletionLogprobs(BaseModel):
    """The legacy endpoint's ``logprobs``: parallel lists; ``top_logprobs`` maps token text to logprob and holds
    the sampled token too (so up to ``logprobs`` + 1 entries, as OpenAI documents)."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def of(cls, tokens: Sequence[TokenLogprob] | None, offsets: TextOffsets) -> CompletionLogprobs | None:
        if tokens is None:
            return None
        tops = []
        for t in tokens:
            top = {a.token: _logprob(a.logprob) for a in t.top}
            top.setdefault(t.token, _logprob(t.logprob))
            tops.append(top)
        return cls(
            tokens=[t.token for t in tokens],
            token_logprobs=[_logprob(t.logprob) for t in tokens],
            top_logprobs=tops,
            text_offset=[offsets.take(t) for t in tokens],
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: Usage

    @classmethod
    def from_results(cls, results: Sequence[GenerationResult], model: str) -> ChatCompletionResponse:
        choices = [
            ChatChoice(
                index=i,
                message=AssistantMessage(content=r.text),
                finish_reason=r.finish_reason,
                logprobs=ChatLogprobs.of(r.logprobs),
            )
            for i, r in enumerate(results)
        ]
        return cls(model=model, choices=choices, usage=Usage.of_results(results))


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage

    @classmethod
    def from_results(cls, results: Sequence[GenerationResult], model: str, echo: str = "") -> CompletionResponse:
        """``echo``: the prompt, put before each choice's text (``echo: true``)."""
        choices = [
            CompletionChoice(
                index=i,
                text=echo + r.text,
                finish_reason=r.finish_reason,
                logprobs=CompletionLogprobs.of(r.logprobs, TextOffsets(len(echo))),
            )
            for i, r in enumerate(results)
        ]
        return cls(model=model, choices=choices, usage=Usage.of_results(results))
