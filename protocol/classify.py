"""phifleet's own /v1/classify: label scoring over the given labels (no generation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from phifleet.engine.prompts import classification_prompt
from phifleet.engine.types import LabelScores, Prompt


class ClassifyRequest(BaseModel):
    """Strict like the OpenAI endpoints: unknown fields and coerced types are refused by name."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    input: str | list[str]
    labels: list[str] = Field(min_length=2)
    instruction: str | None = None

    def prompts(self) -> list[Prompt]:
        """One rendered prompt per input text, ending in the assistant turn the labels are scored after."""
        texts = [self.input] if isinstance(self.input, str) else self.input
        return [classification_prompt(t, self.labels, self.instruction) for t in texts]


class Classification(BaseModel):
    index: int
    label: str
    scores: dict[str, float]
    logprobs: dict[str, float]


class ClassifyUsage(BaseModel):
    prompt_tokens: int


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Classification]
    usage: ClassifyUsage

    @classmethod
    def from_scores(cls, scores: Sequence[LabelScores], model: str) -> ClassifyResponse:
        data = [
            Classification(index=i, label=s.label, scores=s.probabilities, logprobs=s.logprobs)
            for i, s in enumerate(scores)
        ]
        return cls(model=model, data=data, usage=ClassifyUsage(prompt_tokens=sum(s.prompt_tokens for s in scores)))
