"""Stream chunks (chat.completion.chunk, text_completion) and the one server-sent-events encoder.

``ChunkStream`` stamps every chunk of one response with the same id, created time and model, so the
ingress only says what happened (role, text, finish, usage) and never builds a chunk by hand.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer

from phifleet.engine.types import FinishReason
from phifleet.protocol.responses import Usage, new_id, now

SSE_DONE = "data: [DONE]\n\n"


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
    logprobs: None = None


class CompletionChunkChoice(BaseModel):
    index: int
    text: str = ""
    finish_reason: FinishReason | None = None
    logprobs: None = None


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
    """The chunks of one streamed response; ``chat`` picks chat.completion.chunk over text_completion."""

    chat: bool
    model: str
    id: str = ""
    created: int = Field(default_factory=now)

    def model_post_init(self, context: Any) -> None:
        if not self.id:
            self.id = new_id("chatcmpl" if self.chat else "cmpl")

    def _stamp(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model}

    def role(self, index: int) -> BaseModel | None:
        """Chat streams open each choice with the assistant role; completions have no role chunk."""
        if not self.chat:
            return None
        choice = ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))
        return ChatCompletionChunk(**self._stamp(), choices=[choice])

    def text(self, index: int, text: str) -> BaseModel:
        if self.chat:
            return ChatCompletionChunk(
                **self._stamp(), choices=[ChatChunkChoice(index=index, delta=ChatDelta(content=text))]
            )
        return CompletionChunk(**self._stamp(), choices=[CompletionChunkChoice(index=index, text=text)])

    def finish(self, index: int, reason: FinishReason) -> BaseModel:
        if self.chat:
            choice = ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason)
            return ChatCompletionChunk(**self._stamp(), choices=[choice])
        return CompletionChunk(**self._stamp(), choices=[CompletionChunkChoice(index=index, finish_reason=reason)])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> BaseModel:
        """The last chunk when ``stream_options.include_usage``: no choices, the whole response's usage."""
        cls = ChatCompletionChunk if self.chat else CompletionChunk
        return cls(**self._stamp(), choices=[], usage=Usage.of(prompt_tokens, completion_tokens))
