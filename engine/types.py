"""Request and result types of the engine: plain data, validated once at the edge."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FinishReason = Literal["stop", "length"]


class ResponseFormat(BaseModel):
    """What the output must be: any JSON object, or JSON valid under a schema (OpenAI's ``response_format``).

    The schema travels as compact JSON text, its keys in their order (the object's fields come in that order):
    hashable (the compiled-grammar cache's key) and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["json_object", "json_schema"]
    schema_text: str = Field(default="{}", description="The JSON Schema, as canonical JSON text.")
    strict: bool = Field(
        default=False, description="Unlisted properties are refused even without additionalProperties."
    )
    name: str = ""


class SamplingParams(BaseModel):
    """Per-request decoding knobs, named as in the OpenAI API where it has them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=16, description="Completion tokens to generate at most.")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="0 disables top-k filtering.")
    seed: int | None = Field(default=None, description="Same seed, same prompt: same sample, whatever the batch.")
    stop: tuple[str, ...] = Field(default=(), description="Strings that end generation; not included in the text.")
    ignore_eos: bool = Field(
        default=False, description="Generate max_tokens even past end-of-text (vLLM's extension; for benchmarks)."
    )
    fit_to_context: bool = Field(
        default=False,
        description="max_tokens is a default, not the client's ask: lower it to what the context window leaves.",
    )
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="Return each generated token's log-probability and this many most likely alternatives.",
    )
    logit_bias: dict[int, float] | None = Field(
        default=None, description="Added to the logits of these token ids before sampling (-100 bans, 100 forces)."
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="Constrain the output to JSON (engine.structured_output); None: free text."
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return value

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, value: int | None) -> int | None:
        if value is not None and not -(2**63) <= value < 2**64:
            raise ValueError("seed must fit in 64 bits")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        for token, bias in (value or {}).items():
            if token < 0 or not -100 <= bias <= 100:
                raise ValueError(f"logit_bias maps token ids >= 0 to biases in [-100, 100], got {token}: {bias}")
        return value or None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class PromptPart:
    """A piece of a prompt: ``trusted`` text (the chat template's own markup) may contain control tokens;
    anything else (message content, a completion prompt) is encoded as plain text, special-token strings included."""

    text: str
    trusted: bool = False


@dataclass(frozen=True)
class Prompt:
    """A prompt as template markup and content kept apart, so content can never become control tokens."""

    parts: tuple[PromptPart, ...]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)

    @classmethod
    def plain(cls, text: str) -> Prompt:
        return cls((PromptPart(text),))

    def to_json(self) -> str:
        """For a string column between job stages: ``[[text, trusted], ...]``."""
        return json.dumps([[p.text, p.trusted] for p in self.parts])

    @classmethod
    def from_json(cls, data: str) -> Prompt:
        return cls(tuple(PromptPart(text, trusted) for text, trusted in json.loads(data)))


@dataclass(frozen=True)
class TokenLogprob:
    """One token with its log-probability under the model (before temperature, top-p and logit_bias), and
    on generated tokens the most likely alternatives at that position."""

    token_id: int
    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt: plain ``str`` is trusted text whose special-token strings are control tokens (job templates,
    benchmarks); a ``Prompt`` keeps client content apart so it is encoded as text (engine.chat_template)."""

    prompt: str | Prompt
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str | None = None
    prompt_param: str = "prompt"  # the field a client error about the prompt names ("messages" for chat)

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt.text


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...]
    request_id: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None  # one per generated token (end-of-text excluded) if asked


@dataclass(frozen=True)
class StreamDelta:
    """One step of a streamed generation: new text, and on the last delta the finish reason and counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None  # of the tokens generated since the previous delta, if asked


@dataclass(frozen=True)
class LabelScores:
    """Log-likelihood of each candidate label as the assistant's whole answer."""

    label: str
    logprobs: dict[str, float]
    normalized_logprobs: dict[str, float]
    prompt_tokens: int

    @property
    def probabilities(self) -> dict[str, float]:
        return probabilities(self.logprobs)


def probabilities(logprobs: dict[str, float]) -> dict[str, float]:
    """Softmax over candidates' summed log-likelihoods: a calibrated-within-the-set confidence."""
    import math

    top = max(logprobs.values())
    exps = {k: math.exp(v - top) for k, v in logprobs.items()}
    total = sum(exps.values())
    return {k: v / total for k, v in exps.items()}
