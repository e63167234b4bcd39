"""Bounds on what one request may ask for, checked before any tokenizing or templating.

One model for the HTTP endpoint (ServeConfig.limits) and for OpenAI Batch jobs, so a request refused
online is refused the same way inside a batch file. Defaults follow OpenAI's own bounds where it
publishes them (4 stop sequences, top_logprobs <= 20) and are otherwise sized for Phi-4's 16K context.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RequestLimits(BaseModel):
    """What a single chat or completions request may carry; beyond a bound the client gets a 400 naming it."""

    model_config = ConfigDict(extra="forbid")

    max_prompt_chars: int = Field(
        default=131_072,
        ge=1,
        description=(
            "Characters of prompt text (all messages' content together), refused before tokenizing: a cheap "
            "bound in front of the exact token check against the context window."
        ),
    )
    max_messages: int = Field(default=1024, ge=1, description="Messages in one chat request.")
    max_stop_sequences: int = Field(default=4, ge=0, description="Stop strings per request (OpenAI: 4).")
    max_stop_chars: int = Field(default=256, ge=1, description="Characters of one stop string.")
    max_n: int = Field(default=16, ge=1, description="Choices per request (`n`); each is a generation.")
    max_json_depth: int = Field(default=32, ge=2, description="Nesting depth of a request body's JSON.")
    max_logit_bias: int = Field(default=300, ge=0, description="Entries of `logit_bias` (OpenAI: 300).")
    allow_raw_prompts: bool = Field(
        default=False,
        description=(
            "Completion prompts' special-token strings (Phi-4's chat markup) are parsed as control tokens. Off: "
            "every prompt and message is encoded as plain text. Only for trusted clients."
        ),
    )
