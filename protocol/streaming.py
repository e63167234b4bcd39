"""Stream chunks (chat.completion.chunk, text_completion) and the one server-sent-events encoder.

``ChunkStream`` stamps every chunk of one response with the same id, created time and model, so the
ingress only says what happened (role, text, finish, usage) and never builds a chunk by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, model_serializer

from phifleet.engine.types import FinishReason, TokenLogprob
from phifleet.protocol.errors import OpenAIError
from phifleet.protocol.responses import ChatLogprobs, CompletionLogprobs, TextOffsets, Usage, new_id, now

SSE_DONE = "data: [DONE]\n\n"


def sse_error(error: OpenAIError) -> str:
    """An error after a stream has started (its 200 and headers are sent): one event with OpenAI's error object,
    as OpenAI and vLLM send it; the stream then ends with ``data: [DONE]``."""
    return f"data: {json.dumps(error.body())}\n\n"


def sse(chunk: BaseModel) -> str:
    """One server-sent event carrying ``chunk`` as JSON, as OpenAI streams them."""
    return f"data: {chunk.model_dump_json()}\n\n"


class ChatDelta(BaseModel):
    """Only the fields a chunk sets: ``{"role", "content": ""}`` first, then ``{"content"}``, then ``{}``."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class CompletionChunkChoice(BaseModel):
    index: int
    text: str = ""
    finish_reason: FinishReason | None = None
    logprobs: CompletionLogprobs | None = None


class _Chunk(BaseModel):
    id: str
    created: int
    model: str
    usage: Usage | None = None

    @model_serializer(mode="wrap")
    def _usage_only_when_set(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("usage") is None:
            data.pop("usage", None)
        return data


class ChatCompletionChunk(_Chunk):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class CompletionChunk(_Chunk):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChunkChoice]


class ChunkStream(BaseModel):
    """The chunks of one streamed response; ``chat`` picks chat.completion.chunk over text_completion.

    ``echo`` (completions' ``echo: true``) is the prompt each choice's text starts with; ``text_offset`` of the
    completions' logprobs counts on from it across a choice's chunks.
    """

    chat: bool
    model: str
    echo: str = ""
    id: str = ""
    created: int = Field(default_factory=now)
    _offsets: dict[int, TextOffsets] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        if not self.id:
            self.id = new_id("chatcmpl" if self.chat else "cmpl")

    def _stamp(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model}

    def role(self, index: int) -> BaseModel | None:
        """The chunk that opens choice ``index``: the assistant role in chat, the echoed prompt in completions
        with ``echo``; None for plain completions, which have no role chunk."""
        if not self.chat:
            if not self.echo:
                return None
            return CompletionChunk(**self._stamp(), choices=[CompletionChunkChoice(index=index, text=self.echo)])
        choice = ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))
        return ChatCompletionChunk(**self._stamp(), choices=[choice])

    def text(self, index: int, text: str, logprobs: Sequence[TokenLogprob] | None = None) -> BaseModel:
        """New text of choice ``index``, with the logprobs of the tokens it came from when they were asked for."""
        if self.chat:
            choice = ChatChunkChoice(index=index, delta=ChatDelta(content=text), logprobs=ChatLogprobs.of(logprobs))
            return ChatCompletionChunk(**self._stamp(), choices=[choice])
        offsets = self._offsets.setdefault(index, TextOffsets(len(self.echo)))
        completion = CompletionChunkChoice(index=index, text=text, logprobs=CompletionLogprobs.of(logprobs, offsets))
        return CompletionChunk(**self._stamp(), choices=[completion])

    def finish(self, index: int, reason: FinishReason) -> BaseModel:
        if self.chat:
            choice = ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason)
            return ChatCompletionChunk(**self._stamp(), choices=[choice])
        return CompletionChunk(**self._stamp(), choices=[CompletionChunkChoice(index=index, finish_reason=reason)])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> BaseModel:
        """The last chunk when ``stream_options.include_usage``: no choices, the whole response's usage."""
        cls = ChatCompletionChunk if self.chat else CompletionChunk
        return cls(**self._stamp(), choices=[], usage=Usage.of(prompt_tokens, completion_tokens))
