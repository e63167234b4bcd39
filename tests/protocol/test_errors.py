"""The one mapping from exceptions to OpenAI errors: status, type, param and code per kind of mistake."""

import pytest
from openai.types.shared import ErrorObject
from pydantic import ValidationError

from phifleet.engine.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedConfigError,
)
from phifleet.protocol.classify import ClassifyRequest
from phifleet.protocol.errors import OpenAIError, format_validation_error, model_not_found, openai_error

INVALID = "invalid_request_error"


def validation_error(body) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        ClassifyRequest.model_validate(body)
    return err.value


@pytest.mark.parametrize(
    ("exc", "status", "kind", "param", "code"),
    [
        (InvalidRequestError("bad max_tokens", param="max_tokens"), 400, INVALID, "max_tokens", None),
        (ContextLengthExceededError("too long", param="prompt"), 400, INVALID, "prompt", "context_length_exceeded"),
        (ModelNotFoundError("no such model"), 404, INVALID, "model", "model_not_found"),
        (UnsupportedConfigError("fp16 on CPU"), 500, "server_error", None, None),
        (EngineError("broken"), 500, "server_error", None, None),
        (RuntimeError("boom"), 500, "server_error", None, None),
    ],
)  # fmt: skip
def test_exceptions_map_to_openai_errors(exc, status, kind, param, code):
    err = openai_error(exc)
    assert (err.status, err.type, err.param, err.code) == (status, kind, param, code)
    assert ErrorObject.model_validate(err.body()["error"]).message == err.message


def test_validation_errors_name_the_field():
    err = openai_error(validation_error({"input": "x", "labels": ["a"]}))
    assert (err.status, err.param) == (400, "labels") and err.message.startswith("labels: ")
    nested = openai_error(validation_error({"input": ["x", 3], "labels": ["a", "b"]}))
    assert nested.param.startswith("input")
    whole = openai_error(validation_error(None))  # not a JSON object: no field to name
    assert whole.param is None and whole.status == 400


def test_format_validation_error_lists_every_field():
    text = format_validation_error(validation_error({"labels": ["a"]}))
    assert "input: Field required" in text and "labels: " in text and "; " in text


def test_openai_errors_pass_through_and_model_not_found():
    err = OpenAIError(429, "slow down", type="rate_limit_error", code="rate_limit_exceeded")
    assert openai_error(err) is err
    missing = model_not_found("gpt-4o", "phi-4")
    assert (missing.status, missing.code, missing.param) == (404, "model_not_found", "model")
    assert "'gpt-4o'" in missing.message and "'phi-4'" in missing.message
