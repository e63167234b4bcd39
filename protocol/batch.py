"""OpenAI Batch API file lines: ``{custom_id, method, url, body}`` in; output and error lines out.

A request the API would refuse with a 400 becomes an error line carrying that 400 response; a line
that is not a request at all (malformed JSON, no custom_id, a crash) gets a top-level ``error``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel

from phifleet.protocol.errors import OpenAIError


def batch_request_id(custom_id: str | None, line: int) -> str:
    """Stable per input line, so a retried or resumed run writes the same id."""
    return f"batch_req_{hashlib.sha1(f'{custom_id}:{line}'.encode()).hexdigest()[:24]}"


class BatchResponse(BaseModel):
    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchLineError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int


class BatchLine(BaseModel):
    """One line of the output or the error file."""

    id: str
    custom_id: str | None
    response: BatchResponse | None = None
    error: BatchLineError | None = None

    @classmethod
    def ok(cls, custom_id: str, line: int, body: dict[str, Any]) -> BatchLine:
        rid = batch_request_id(custom_id, line)
        return cls(id=rid, custom_id=custom_id, response=BatchResponse(status_code=200, request_id=rid, body=body))

    @classmethod
    def failed(cls, custom_id: str | None, line: int, message: str, code: str, param: str | None = None) -> BatchLine:
        """A 400 response for a request the API would refuse (``code`` invalid_request), else a line error."""
        rid = batch_request_id(custom_id, line)
        if custom_id is not None and code == "invalid_request":
            body = OpenAIError(400, message, param=param, code=code).body()
            return cls(id=rid, custom_id=custom_id, response=BatchResponse(status_code=400, request_id=rid, body=body))
        return cls(
            id=rid, custom_id=custom_id, error=BatchLineError(code=code, message=message, param=param, line=line)
        )
