"""Request validation without the model's weights: the tokenizer and the context window are enough.

The engine checks every request with it before generating or scoring, and the batch jobs' CPU stage
runs the very same checks on rows before they reach a GPU replica, so a row is refused with the
message a server client would get for the same request.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from phifleet.engine.chat_template import IM_END
from phifleet.engine.errors import ContextLengthExceededError, InvalidRequestError
from phifleet.engine.loading import load_tokenizer
from phifleet.engine.types import GenerationRequest


class RequestValidator:
    """Checks prompts, completion budgets and candidate labels against one tokenizer and context window."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_window: int) -> None:
        self.tokenizer = tokenizer
        self.context_window = context_window
        self.im_end_id: int | None = tokenizer.get_vocab().get(IM_END)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, context_window: int) -> RequestValidator:
        """Loads only the tokenizer: cheap enough for every CPU worker of a job."""
        return cls(load_tokenizer(Path(model_dir)), context_window)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, prompt: object, reserve: int, param: str = "prompt") -> list[int]:
        """The prompt's token ids, if it is a non-empty string leaving ``reserve`` tokens of the context window."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequestError(f"{param} must be a non-empty string", param=param)
        ids = self.encode(prompt)
        if len(ids) + reserve > self.context_window:
            raise ContextLengthExceededError(
                f"{param} is {len(ids)} tokens and {reserve} more are requested, but the context window is "
                f"{self.context_window} tokens",
                param=param,
            )
        return ids

    def generation(self, request: GenerationRequest) -> list[int]:
        """A generation request's prompt ids: at least one completion token, and room for ``max_tokens`` of them."""
        if request.params.max_tokens <= 0:
            raise InvalidRequestError(
                f"max_tokens must be at least 1, got {request.params.max_tokens}", param="max_tokens"
            )
        return self.prompt_ids(request.prompt, request.params.max_tokens)

    def label_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """Each candidate's tokens as the assistant's whole answer, ending in <|im_end|> if the vocabulary has it."""
        if not labels:
            raise InvalidRequestError("labels must contain at least one label", param="labels")
        if len(set(labels)) != len(labels):
            raise InvalidRequestError("labels must be unique", param="labels")
        end = [self.im_end_id] if self.im_end_id is not None else []
        out = []
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise InvalidRequestError("labels must be non-empty strings", param="labels")
            out.append(self.encode(label) + end)
        return out

    def label_prompt_ids(self, prompt: object, label_ids: Sequence[Sequence[int]], param: str = "prompt") -> list[int]:
        """A prompt to score labels after: room for the longest candidate."""
        return self.prompt_ids(prompt, max(len(ids) for ids in label_ids), param=param)
