"""The engine's error types: the server and the jobs map these onto user-facing errors.

Every error names what was wrong (``param``) so an HTTP 400 or an ``errors`` row can point at it.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequestError(EngineError, ValueError):
    """The request itself is wrong (empty prompt, max_tokens <= 0, no labels): a client error."""


class ContextLengthExceededError(InvalidRequestError):
    """Prompt plus requested completion does not fit the context window."""


class ModelNotFoundError(EngineError, FileNotFoundError):
    """The model source is neither a local directory nor an id present in the local Hugging Face cache."""


class UnsupportedConfigError(EngineError, ValueError):
    """A configuration the hardware or the installed libraries cannot run (e.g. fp16 on the CPU)."""
