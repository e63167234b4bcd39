"""OpenAI request bodies for /v1/chat/completions and /v1/completions, each able to become engine requests.

Unknown fields are ignored, as OpenAI-compatible servers do; a bad field fails validation naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from phifleet.engine.chat_template import render_chat
from phifleet.engine.types import GenerationRequest, GenerationResult, SamplingParams
from phifleet.protocol.errors import OpenAIError, openai_error
from phifleet.protocol.responses import ChatCompletionResponse, CompletionResponse
from phifleet.protocol.streaming import ChunkStream

CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
DEFAULT_MAX_TOKENS = 256


class _Common(BaseModel):
    """Fields both endpoints share."""

    model_config = ConfigDict(extra="ignore")
    url: ClassVar[str]
    chat: ClassVar[bool]
    default_max_tokens: ClassVar[int] = DEFAULT_MAX_TOKENS

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extension: fixed-length generations for benchmarks

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return stops

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (``stream_options.include_usage``)."""
        return bool((self.stream_options or {}).get("include_usage"))

    def completion_limit(self) -> int:
        return self.max_tokens or self.default_max_tokens

    def prompt_text(self) -> str:
        raise NotImplementedError

    def sampling(self, index: int = 0) -> SamplingParams:
        """Choice ``index`` of ``n``: seeded requests give each choice its own, reproducible seed."""
        return SamplingParams(
            max_tokens=self.completion_limit(),
            temperature=self.temperature,
            top_p=self.top_p,
            seed=None if self.seed is None else self.seed + index,
            stop=tuple(self.stop or ()),
            ignore_eos=self.ignore_eos,
        )

    def generation_requests(self) -> list[GenerationRequest]:
        """One engine request per choice (``n``)."""
        prompt = self.prompt_text()
        return [GenerationRequest(prompt, self.sampling(i)) for i in range(self.n)]

    def response(self, results: Sequence[GenerationResult], model: str) -> ChatCompletionResponse | CompletionResponse:
        """The non-streaming answer to this request: one choice per result."""
        cls = ChatCompletionResponse if self.chat else CompletionResponse
        return cls.from_results(results, model)

    def chunk_stream(self, model: str) -> ChunkStream:
        """The chunks of a streamed answer to this request."""
        return ChunkStream(chat=self.chat, model=model)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]


class ChatCompletionRequest(_Common):
    url: ClassVar[str] = CHAT_COMPLETIONS
    chat: ClassVar[bool] = True

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def prompt_text(self) -> str:
        # "developer" is OpenAI's newer name for the system role.
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in self.messages]
        return render_chat(msgs)

    def completion_limit(self) -> int:
        return self.max_completion_tokens or super().completion_limit()


class CompletionRequest(_Common):
    url: ClassVar[str] = COMPLETIONS
    chat: ClassVar[bool] = False
    default_max_tokens: ClassVar[int] = 16  # OpenAI's default for the legacy endpoint

    prompt: str

    def prompt_text(self) -> str:
        return self.prompt


GenerateRequest = ChatCompletionRequest | CompletionRequest
REQUEST_MODELS: dict[str, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    m.url: m for m in (ChatCompletionRequest, CompletionRequest)
}


def parse_request(url: str, body: object) -> GenerateRequest:
    """Validate a request body for ``url``; raises OpenAIError (400) naming the first bad field."""
    if url not in REQUEST_MODELS:
        raise OpenAIError(400, f"url must be {CHAT_COMPLETIONS} or {COMPLETIONS}, got {url!r}", param="url")
    if not isinstance(body, dict):
        raise OpenAIError(400, "body must be a JSON object", param="body")
    try:
        return REQUEST_MODELS[url].model_validate(body)
    except ValidationError as exc:
        raise openai_error(exc) from exc
