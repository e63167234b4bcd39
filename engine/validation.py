"""Request validation without the model's weights: the tokenizer and the context window are enough.

The engine checks every request with it before generating or scoring, and the batch jobs' CPU stage
runs the very same checks on rows before they reach a GPU replica, so a row is refused with the
message a server client would get for the same request.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from phifleet.engine.chat_template import IM_END
from phifleet.engine.errors import ContextLengthExceededError, InvalidRequestError
from phifleet.engine.loading import load_tokenizer
from phifleet.engine.structured_output import GrammarCompiler
from phifleet.engine.types import GenerationRequest, Prompt


class RequestValidator:
    """Checks prompts, completion budgets and candidate labels against one tokenizer and context window.

    Thread-safe: it encodes with its own copy of the tokenizer under a lock, so a serving replica tokenizes
    on a thread of its own while the engine thread decodes with the original (encoding content as plain text
    flips a flag on the Rust tokenizer, which must not race with another encode).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_window: int) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self.context_window = context_window
        self.vocab_size = len(tokenizer)
        self.im_end_id: int | None = tokenizer.get_vocab().get(IM_END)
        self._lock = threading.Lock()
        self._markup: dict[str, list[int]] = {}  # the chat template's few markup strings, encoded once
        self._grammars: GrammarCompiler | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, context_window: int) -> RequestValidator:
        """Loads only the tokenizer: cheap enough for every CPU worker of a job."""
        return cls(load_tokenizer(Path(model_dir)), context_window)

    def encode(self, text: str, plain: bool = False) -> list[int]:
        """Token ids of ``text``; ``plain`` encodes special-token strings as ordinary text (client content)."""
        with self._lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=plain))

    def encode_prompt(self, prompt: str | Prompt, param: str = "prompt") -> list[int]:
        """A ``str`` is trusted text (its special-token strings are control tokens); a ``Prompt``'s content is not."""
        if isinstance(prompt, str):
            _check_unicode(prompt, param)
            return self.encode(prompt)
        content = [p.text for p in prompt.parts if not p.trusted]
        for text in content:
            _check_unicode(text, param)
        encoded = iter([])
        if content:
            with self._lock:  # all content in one call: a chat prompt's parts cost one tokenizer call, not five
                batch = self.tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            encoded = iter(batch)
        ids: list[int] = []
        for part in prompt.parts:
            if not part.trusted:
                ids += next(encoded)
                continue
            markup = self._markup.get(part.text)
            if markup is None:
                _check_unicode(part.text, param)
                markup = self.encode(part.text)
                if len(self._markup) < 256:
                    self._markup[part.text] = markup
            ids += markup
        return ids

    def prompt_ids(self, prompt: object, reserve: int, param: str = "prompt") -> list[int]:
        """The prompt's token ids, if it is a non-empty string leaving ``reserve`` tokens of the context window."""
        text = prompt.text if isinstance(prompt, Prompt) else prompt
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError(f"{param} must be a non-empty string", param=param)
        ids = self.encode_prompt(prompt, param)  # type: ignore[arg-type]
        if len(ids) + reserve > self.context_window:
            raise ContextLengthExceededError(
                f"{param} is {len(ids)} tokens and {reserve} more are requested, but the context window is "
                f"{self.context_window} tokens",
                param=param,
            )
        return ids

    def generation(self, request: GenerationRequest, check_grammar: bool = True) -> list[int]:
        """A generation request's prompt ids: at least one completion token, and room for ``max_tokens`` of them.

        A ``max_tokens`` the request did not set itself (``fit_to_context``) is a ceiling: use
        ``completion_budget`` for what the prompt leaves.
        """
        params, param = request.params, request.prompt_param
        if params.max_tokens <= 0:
            raise InvalidRequestError(f"max_tokens must be at least 1, got {params.max_tokens}", param="max_tokens")
        if params.max_tokens >= self.context_window and not params.fit_to_context:
            raise ContextLengthExceededError(
                f"max_tokens is {params.max_tokens}, but the context window is {self.context_window} tokens "
                "(prompt and completion together)",
                param="max_tokens",
            )
        if params.response_format is not None:
            if params.stop:
                raise InvalidRequestError(
                    "stop is not allowed with response_format (a stop string could cut the object short)", param="stop"
                )
            if check_grammar:  # a schema xgrammar cannot compile is this request's error (the engine compiles its own)
                self.grammars().compile(params.response_format)
        for token in params.logit_bias or {}:
            if token >= self.vocab_size:
                raise InvalidRequestError(
                    f"logit_bias names token {token}, but the vocabulary has {self.vocab_size} tokens",
                    param="logit_bias",
                )
        return self.prompt_ids(request.prompt, 1 if params.fit_to_context else params.max_tokens, param=param)

    @property
    def lock(self) -> threading.Lock:
        """Held around every use of ``tokenizer``: encoding flips flags on the Rust tokenizer."""
        return self._lock

    def grammars(self) -> GrammarCompiler:
        """Compiles response formats to check them where the tokenizer is all there is (a job's CPU stage)."""
        with self._lock:
            if self._grammars is None:
                self._grammars = GrammarCompiler(self.tokenizer, self.vocab_size, frozenset())
            return self._grammars

    def completion_budget(self, request: GenerationRequest, prompt_len: int) -> int:
        """Tokens this request may generate after a prompt of ``prompt_len`` tokens."""
        if request.params.fit_to_context:
            return min(request.params.max_tokens, self.context_window - prompt_len)
        return request.params.max_tokens

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


def _check_unicode(text: str, param: str) -> None:
    """A lone surrogate (JSON ``"\\ud800"``) is not text: the tokenizer would raise a TypeError deep inside."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{param} is not valid Unicode: a lone surrogate at character {exc.start}", param=param
        ) from None
