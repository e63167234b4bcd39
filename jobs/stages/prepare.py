"""Prepare stage (CPU tasks): parse each raw row, render its prompt and validate it as the engine would.

Rows already committed by an earlier run are dropped here; later occurrences of a duplicate id, and
every row the kind or the engine's validator refuses, become error rows: one output row per input row.
"""

from __future__ import annotations

import functools

import pyarrow as pa
import ray

from phifleet.engine.errors import EngineError
from phifleet.engine.validation import RequestValidator
from phifleet.jobs.kinds import job_kind
from phifleet.jobs.rows import Prepared, RowError, safe_text
from phifleet.jobs.sources import parse_record
from phifleet.jobs.stages.base import Stage, StageSpec, columns, table
from phifleet.protocol.errors import openai_error

_S, _I = pa.string(), pa.int64()
PREPARED_SCHEMA = pa.schema(
    [
        ("source", _S),
        ("line", _I),
        ("id", _S),
        ("prompt", _S),
        ("request", _S),
        ("raw", _S),
        ("error", _S),
        ("error_code", _S),
        ("param", _S),
    ]
)
SkipSets = tuple[frozenset[tuple[str, int]], frozenset[tuple[str, int]]]


@functools.lru_cache(maxsize=4)
def cached_validator(model_dir: str, context_window: int) -> RequestValidator:
    """One validator per worker process and model: loading the tokenizer once."""
    return RequestValidator.from_model_dir(model_dir, context_window)


_SKIP_CACHE: dict[str, SkipSets] = {}


def _skip_sets(ref: ray.ObjectRef | SkipSets) -> SkipSets:
    """The (done, duplicate) key sets, fetched once per worker process from the object store."""
    if not isinstance(ref, ray.ObjectRef):
        return ref
    key = ref.hex()
    if key not in _SKIP_CACHE:
        _SKIP_CACHE.clear()
        _SKIP_CACHE[key] = ray.get(ref)
    return _SKIP_CACHE[key]


def as_row_error(exc: RowError | EngineError) -> RowError:
    """An engine validation error as a row error, with the code and field an OpenAI client would get."""
    if isinstance(exc, RowError):
        return exc
    err = openai_error(exc)
    return RowError(err.message, code=err.code or "invalid_request", param=err.param)


def prepare(batch: pa.Table, spec: StageSpec, skip_ref: ray.ObjectRef | SkipSets) -> pa.Table:
    data = columns(batch)
    done, duplicates = _skip_sets(skip_ref)
    kind = job_kind(spec.config, spec.model_name)
    validator = cached_validator(spec.model_dir, spec.max_model_len)
    out: dict[str, list] = {c: [] for c in PREPARED_SCHEMA.names}
    for source, line, raw, read_error, path, read_code in zip(
        data["source"], data["line"], data["raw"], data["read_error"], data["path"], data["read_code"], strict=True
    ):
        source, line = str(source), int(line)
        if (source, line) in done:
            continue
        rid: str | None = None
        prepared: Prepared | None = None
        error: RowError | None = None
        try:
            if read_error is not None:
                raise RowError(read_error, code=read_code or "malformed_row")
            try:
                record = parse_record(raw)
            except ValueError as exc:
                raise RowError(str(exc), code="invalid_json") from exc
            rid = kind.row_id(record, str(path), line)
            prepared = kind.prepare(record, rid, validator)
            if (source, line) in duplicates:
                raise RowError(f"duplicate id {rid!r}: an earlier row has it", code="duplicate_id")
        except (RowError, EngineError) as exc:
            error, prepared = as_row_error(exc), None
        except Exception as exc:  # whatever one row does, it becomes its own error row; the batch goes on
            error, prepared = RowError(f"the row could not be prepared: {type(exc).__name__}: {exc}"), None
        values = {
            "source": source,
            "line": line,
            "id": rid,
            "prompt": prepared.prompt if prepared else "",
            "request": prepared.request if prepared else "",
            "raw": raw,
            "error": safe_text(str(error)) if error else None,
            "error_code": error.code if error else None,
            "param": error.param if error else None,
        }
        for column, value in values.items():
            out[column].append(value)
    return table(out, PREPARED_SCHEMA)


def prepare_stage(spec: StageSpec) -> Stage:
    pool = spec.config.pool
    return Stage(
        "prepare",
        prepare,
        needs=("source", "line", "raw", "read_error", "path", "read_code"),
        produces=PREPARED_SCHEMA,
        fn_kwargs={"spec": spec},
        map_kwargs={"batch_size": pool.batch_size},
        run_inputs=("skip_ref",),
    )
