"""One request's decoding state, shared by the static and the continuous batcher."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from phifleet.engine.detokenizer import Decoder, IncrementalDetokenizer
from phifleet.engine.types import FinishReason, GenerationResult, SamplingParams, StreamDelta


class Sequence:
    """Accumulates tokens and decides when the request is finished (end token, stop string, length)."""

    def __init__(
        self,
        prompt_ids: Seq[int],
        params: SamplingParams,
        tokenizer: Decoder,
        eos_ids: frozenset[int],
        request_id: str | None = None,
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.request_id = request_id
        self.eos_ids = eos_ids
        self.token_ids: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.detok = IncrementalDetokenizer(tokenizer, params.stop)
        self.generator: torch.Generator | None = None
        self.cancelled = False

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    def cancel(self) -> None:
        """Nobody wants the rest (a client went away): the batcher drops the row at its next step."""
        self.cancelled = True

    def push(self, token_id: int) -> None:
        if self.finished:
            return
        self.token_ids.append(token_id)
        if token_id in self.eos_ids:
            self.finish_reason = "stop"
            return
        self.detok.add(token_id)
        if self.detok.stopped:
            self.finish_reason = "stop"
        elif len(self.token_ids) >= self.params.max_tokens:
            self.finish_reason = "length"

    def stream_delta(self) -> StreamDelta | None:
        """The text to send now; the final delta carries the finish reason and usage."""
        text = self.detok.delta(final=self.finished)
        if self.finished:
            return StreamDelta(text, self.finish_reason, len(self.prompt_ids), len(self.token_ids))
        return StreamDelta(text) if text else None

    def result(self) -> GenerationResult:
        assert self.finish_reason is not None
        return GenerationResult(
            text=self.detok.text,
            finish_reason=self.finish_reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.token_ids),
            token_ids=tuple(self.token_ids),
            request_id=self.request_id,
        )
