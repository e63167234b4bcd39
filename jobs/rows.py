"""A row on its way through a job: what every kind shares about ids, errors and prepared prompts."""

from __future__ import annotations

import hashlib
import math
import re
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


#: Generated ids are ``@<path>:<line>``; explicit ids of that form are refused, so the two can never collide.
GENERATED_ID = re.compile(r"@.+:[0-9]+", re.DOTALL)


def generated_id(path: str, line: int) -> str:
    """The id of a row that has none: ``@`` + the file's path under the input root + ``:`` + its line (JSONL,
    CSV; a CSV row's last physical line) or row number (Parquet, from 1). Unique per input: (path, line) is."""
    return f"@{path}:{line}"


def row_id(record: dict[str, Any], id_column: str | None, path: str, line: int) -> str:
    """The row's id: its id column as a string (``explicit_id``), or ``generated_id`` when it has none (no
    such column, or null)."""
    if id_column and record.get(id_column) is not None:
        return explicit_id(record[id_column], id_column)
    return generated_id(path, line)


def explicit_id(value: Any, column: str) -> str:
    """An id column's value as the id string, or RowError (code ``invalid_id``, ``param`` the column).

    Strings are kept as they are; integers become decimal strings, and so do whole floats (``1.0`` -> ``"1"``: what
    pandas writes for a nullable integer column), so ``1``, ``1.0`` and ``"1"`` are one id (later rows are
    duplicates). Refused: booleans, floats with a fraction, NaN or infinity, lists and objects; an empty or
    whitespace-only string; a string of the generated form ``@<path>:<line>``; text with a lone surrogate.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        kind = "a boolean" if isinstance(value, bool) else f"a JSON {_json_type(value)}"
        raise RowError(f"column '{column}' must be a string or a whole number, got {kind}", "invalid_id", column)
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise RowError(f"column '{column}' must be a string or a whole number, got {value!r}", "invalid_id", column)
        value = int(value)
    text = str(value)
    if not text.strip():
        raise RowError(f"column '{column}' is empty", "invalid_id", column)
    if GENERATED_ID.fullmatch(text):
        raise RowError(
            f"id {text!r} has the form '@<path>:<line>' that generated ids have: use another id", "invalid_id", column
        )
    return valid_id(text, column)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array"}.get(type(value), type(value).__name__)


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
