"""A row on its way through a job: what every kind shares about ids, errors and prepared prompts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prepared:
    """A validated row ready for a replica: its id, the rendered prompt and what the kind needs to run it."""

    id: str
    prompt: str
    request: str = ""  # kind-specific JSON the replica needs (an OpenAI body)


class RowError(ValueError):
    """A problem with one row: it becomes that row's error row. ``code`` is reported in OpenAI Batch error lines."""

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


def row_id(record: dict[str, Any], id_column: str | None, source: str, line: int) -> str:
    """The row's id column as a string, or ``<file>:<line>`` when the row has none."""
    if id_column and id_column in record and record[id_column] is not None:
        value = record[id_column]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RowError(f"column '{id_column}' must be a string or an integer", param=id_column)
        return valid_id(str(value), id_column)
    return f"{source.rsplit('/', 1)[-1]}:{line}"


def valid_id(value: str, param: str) -> str:
    """An id that can be written: a lone surrogate (a JSON ``\\ud800`` escape) is no text for Arrow or a file."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(f"'{param}' is not valid Unicode (a lone surrogate)", param=param) from None
    return value


def safe_text(value: str) -> str:
    """Any message as writable text: lone surrogates become their escape (``\\ud800``)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def row_seed(base: int, rid: str) -> int:
    """A per-row seed that does not depend on which batch or replica the row lands in."""
    return base + int.from_bytes(hashlib.sha256(rid.encode()).digest()[:4], "big")


def text_field(record: dict[str, Any], column: str) -> str:
    """The row's non-empty text in ``column``."""
    if column not in record:
        raise RowError(f"missing text column '{column}'", param=column)
    text = record[column]
    if not isinstance(text, str):
        raise RowError(f"column '{column}' must be a string, got {type(text).__name__}", param=column)
    if not text.strip():
        raise RowError(f"column '{column}' is empty", param=column)
    return text
