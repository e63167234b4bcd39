"""OpenAI request and response shapes, mapped onto the engine.

Shared by the batch jobs (OpenAI Batch files) and the server (the HTTP API) so both accept the same
bodies and answer the same objects. Validation names the offending field as OpenAI does (``param``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from phifleet.engine.chat_template import render_chat
from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.types import GenerationRequest, GenerationResult, SamplingParams
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
DEFAULT_MAX_TOKENS = 256


class _Common(BaseModel):
    """Fields both endpoints share. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

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

    def sampling(self, index: int = 0) -> SamplingParams:
        """Choice ``index`` of ``n``: seeded requests give each choice its own, reproducible seed."""
        seed = None if self.seed is None else self.seed + index
        return SamplingParams(
            max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=seed,
            stop=tuple(self.stop or ()),
            ignore_eos=self.ignore_eos,
        )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def prompt(self) -> str:
        # "developer" is OpenAI's newer name for the system role.
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in self.messages]
        return render_chat(msgs)

    def sampling(self, index: int = 0) -> SamplingParams:
        params = super().sampling(index)
        if self.max_completion_tokens is not None:
            params = params.model_copy(update={"max_tokens": self.max_completion_tokens})
        return params


class CompletionRequest(_Common):
    prompt: str

    def sampling(self, index: int = 0) -> SamplingParams:
        return super().sampling(index).model_copy(update={"max_tokens": self.max_tokens or 16})


def parse_request(url: str, body: object) -> ChatCompletionRequest | CompletionRequest:
    """Validate a request body for ``url``; raises InvalidRequestError naming the first bad field."""
    models = {CHAT_COMPLETIONS: ChatCompletionRequest, COMPLETIONS: CompletionRequest}
    if url not in models:
        raise InvalidRequestError(f"url must be {CHAT_COMPLETIONS} or {COMPLETIONS}, got {url!r}", param="url")
    if not isinstance(body, dict):
        raise InvalidRequestError("body must be a JSON object", param="body")
    try:
        return models[url].model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise InvalidRequestError(f"{param}: {err['msg']}" if param else err["msg"], param=param) from exc


def generation_requests(request: ChatCompletionRequest | CompletionRequest) -> list[GenerationRequest]:
    """One engine request per choice (``n``)."""
    prompt = request.prompt() if isinstance(request, ChatCompletionRequest) else request.prompt
    return [GenerationRequest(prompt, request.sampling(i)) for i in range(request.n)]


def response_body(
    request: ChatCompletionRequest | CompletionRequest, results: list[GenerationResult], model: str
) -> dict[str, Any]:
    """A chat.completion or text_completion object, as the OpenAI API returns it."""
    usage = {
        "prompt_tokens": results[0].prompt_tokens,
        "completion_tokens": sum(r.completion_tokens for r in results),
        "total_tokens": results[0].prompt_tokens + sum(r.completion_tokens for r in results),
    }
    created = int(time.time())
    if isinstance(request, ChatCompletionRequest):
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "finish_reason": r.finish_reason,
                "logprobs": None,
            }
            for i, r in enumerate(results)
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
    choices = [
        {"index": i, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None} for i, r in enumerate(results)
    ]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def error_body(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
