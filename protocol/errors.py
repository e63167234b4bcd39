"""The one mapping from exceptions to OpenAI errors, and the one pydantic ValidationError formatter.

Every caller (the HTTP ingress, OpenAI Batch error lines) turns an exception into an ``OpenAIError``
here, so the status, type, message, ``param`` and ``code`` of a given mistake are the same everywhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from phifleet.engine.errors import ContextLengthExceededError, EngineError, InvalidRequestError, ModelNotFoundError


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every non-2xx answer: ``{"error": {message, type, param, code}}``."""

    error: ErrorDetail


class OpenAIError(Exception):
    """An error as a client sees it: HTTP status plus the OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()


def _param(loc: tuple[int | str, ...]) -> str | None:
    """``messages[0].content[1].text``: list indices in brackets, as the engine's own errors name fields."""
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def describe_error(error: ErrorDetails) -> tuple[str | None, str]:
    """(param, message) of one pydantic error; the message starts with the field's dotted path."""
    param = _param(error["loc"])
    return param, f"{param}: {error['msg']}" if param else error["msg"]


def format_validation_error(exc: ValidationError) -> str:
    """Every problem of ``exc`` on one line, each naming its field: ``pool.max_replicas: ...; task.labels: ...``."""
    return "; ".join(describe_error(e)[1] for e in exc.errors())


def openai_error(exc: BaseException) -> OpenAIError:
    """The OpenAI error for ``exc``: client mistakes are 400s naming the field, anything unexpected a 500."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ValidationError):
        param, message = describe_error(exc.errors()[0])
        return OpenAIError(400, message, param=param)
    if isinstance(exc, ContextLengthExceededError):
        return OpenAIError(400, exc.message, param=exc.param, code="context_length_exceeded")
    if isinstance(exc, InvalidRequestError):
        return OpenAIError(400, exc.message, param=exc.param)
    if isinstance(exc, ModelNotFoundError):
        return OpenAIError(404, exc.message, param="model", code="model_not_found")
    if isinstance(exc, EngineError):
        return OpenAIError(500, exc.message, type="server_error")
    return OpenAIError(500, f"internal error: {type(exc).__name__}", type="server_error")


def model_not_found(model: str, served: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model '{model}' does not exist; this endpoint serves '{served}'",
        param="model",
        code="model_not_found",
    )
