"""One request's decoding state, shared by the static and the continuous batcher."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import torch

from phifleet.engine.detokenizer import Decoder, IncrementalDetokenizer
from phifleet.engine.types import FinishReason, GenerationResult, SamplingParams, StreamDelta, TokenLogprob

if TYPE_CHECKING:
    from phifleet.engine.structured_output import Grammar


class Sequence:
    """Accumulates tokens and decides when the request is finished (end token, stop string, length, failure).

    ``max_tokens`` is the completion budget the validator granted (the request's own, or what the context
    window leaves when the request set none).
    """

    def __init__(
        self,
        prompt_ids: Seq[int],
        params: SamplingParams,
        tokenizer: Decoder,
        eos_ids: frozenset[int],
        request_id: str | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.max_tokens = params.max_tokens if max_tokens is None else max_tokens
        self.request_id = request_id
        self.eos_ids = eos_ids
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.detok = IncrementalDetokenizer(tokenizer, params.stop)
        self.generator: torch.Generator | None = None
        self.cancelled = False
        self.error: Exception | None = None
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self._logprobs_sent = 0
        self.grammar: Grammar | None = None  # set by the engine for a response_format (structured_output)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.cancelled or self.error is not None

    def cancel(self) -> None:
        """Nobody wants the rest (a client went away): the batcher drops the row at its next step."""
        self.cancelled = True

    def fail(self, exc: Exception) -> None:
        """This request alone failed (sampling, detokenizing): it leaves the batch; the others go on."""
        if self.error is None:
            self.error = exc

    def push(self, token_id: int, logprob: TokenLogprob | None = None) -> None:
        if self.finished:
            return
        try:
            self._push(token_id, logprob)
        except Exception as exc:
            self.fail(exc)

    def _push(self, token_id: int, logprob: TokenLogprob | None) -> None:
        self.token_ids.append(token_id)
        if self.grammar is not None:
            self.grammar.accept(token_id)
            if self.grammar.terminated:  # the object closed and its stop token came (even with ignore_eos)
                self.finish_reason = "stop"
                return
        if token_id in self.eos_ids:
            self.finish_reason = "stop"
            return
        if self.logprobs is not None and logprob is not None:
            self.logprobs.append(logprob)
        self.detok.add(token_id)
        if self.detok.stopped:
            self.finish_reason = "stop"
        elif len(self.token_ids) >= self.max_tokens:
            # An object that closed on the last token is whole (only its stop token is missing): not cut short.
            complete = self.grammar is not None and self.grammar.complete
            self.finish_reason = "stop" if complete else "length"

    def _new_logprobs(self) -> tuple[TokenLogprob, ...] | None:
        if self.logprobs is None:
            return None
        new = tuple(self.logprobs[self._logprobs_sent :])
        self._logprobs_sent = len(self.logprobs)
        return new

    def stream_delta(self) -> StreamDelta | None:
        """The text to send now; the final delta carries the finish reason and usage."""
        if self.error is not None:
            return None
        text = self.detok.delta(final=self.finished)
        if self.finished:
            n_prompt, n_out = len(self.prompt_ids), len(self.token_ids)
            return StreamDelta(text, self.finish_reason, n_prompt, n_out, self._new_logprobs())
        if not text:
            return None
        return StreamDelta(text, logprobs=self._new_logprobs())

    def result(self) -> GenerationResult:
        if self.error is not None:
            raise self.error
        assert self.finish_reason is not None
        return GenerationResult(
            text=self.detok.text,
            finish_reason=self.finish_reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.token_ids),
            token_ids=tuple(self.token_ids),
            request_id=self.request_id,
            logprobs=None if self.logprobs is None else tuple(self.logprobs),
        )
