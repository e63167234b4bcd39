"""Request and result types of the engine: plain data, validated once at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FinishReason = Literal["stop", "length"]


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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt already rendered to text (chat messages go through engine.chat_template first)."""

    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str | None = None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...]
    request_id: str | None = None


@dataclass(frozen=True)
class StreamDelta:
    """One step of a streamed generation: new text, and on the last delta the finish reason and counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class LabelScores:
    """Log-likelihood of each candidate label as the assistant's whole answer."""

    label: str
    logprobs: dict[str, float]
    normalized_logprobs: dict[str, float]
    prompt_tokens: int

    @property
    def probabilities(self) -> dict[str, float]:
        """Softmax over the candidates' summed log-likelihoods: a calibrated-within-the-set confidence."""
        import math

        top = max(self.logprobs.values())
        exps = {k: math.exp(v - top) for k, v in self.logprobs.items()}
        total = sum(exps.values())
        return {k: v / total for k, v in exps.items()}
