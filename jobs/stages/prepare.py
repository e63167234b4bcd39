"""Prepare stage (CPU tasks): each row's id and record, its prompt rendered and validated as the engine would.

Two row sources, one per-row step (``prepare_row``): a file job's raw rows (exact JSON text, ids from the row or
its ``@<path>:<line>``, rows an earlier run committed dropped, later duplicates of an id refused) and a Dataset's
rows (the Python API: Arrow values, ids from the row or a hash of its content, every column kept). Whatever one row
does, it becomes that row's error row: one output row per input row.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import ray

from phifleet.engine.errors import EngineError
from phifleet.engine.validation import RequestValidator
from phifleet.jobs.kinds import JobKind
from phifleet.jobs.rows import Prepared, RowError, safe_text
from phifleet.jobs.sources import parse_record
from phifleet.jobs.stages.base import CODE, ERROR, ID, PARAM, PROMPT, REQUEST, Stage, StageSpec, columns, table
from phifleet.jobs.stages.columns import COLUMNS, Columns, cached_kind, output_schema
from phifleet.protocol.errors import openai_error

_S, _I = pa.string(), pa.int64()
PREPARED = pa.schema([(ID, _S), (PROMPT, _S), (REQUEST, _S), (ERROR, _S), (CODE, _S), (PARAM, _S)])
# A file job's prepared rows: where each came from and its text (for its error row), then the common columns.
FILE_PREPARED_SCHEMA = pa.schema([("source", _S), ("line", _I), ("raw", _S), *PREPARED])
SkipSets = tuple[frozenset[tuple[str, int]], frozenset[tuple[str, int]]]
# Where a job config wants a path: the API reads a Dataset and writes nothing.
NO_PATH = "<ray.data.Dataset>"


@functools.lru_cache(maxsize=4)
def cached_validator(model_dir: str, context_window: int) -> RequestValidator:
    """One validator per worker process and model: loading the tokenizer once."""
    return RequestValidator.from_model_dir(model_dir, context_window)


def as_row_error(exc: RowError | EngineError) -> RowError:
    """An engine validation error as a row error, with the code and field an OpenAI client would get."""
    if isinstance(exc, RowError):
        return exc
    err = openai_error(exc)
    return RowError(err.message, code=err.code or "invalid_request", param=err.param)


Identified = tuple[str | None, dict[str, Any]]


def prepare_row(
    kind: JobKind,
    validator: RequestValidator,
    identify: Callable[[], Identified],
    refuse: Callable[[str | None], None] | None = None,
) -> tuple[str | None, Prepared | None, RowError | None]:
    """(id, prepared row, None) or (id if known, None, its error): ``identify`` gives the row's id and record,
    ``refuse`` may still reject a row the kind accepted (a duplicate id). No exception escapes."""
    rid: str | None = None
    try:
        rid, record = identify()
        prepared = kind.prepare(record, rid, validator)
        if refuse is not None:
            refuse(rid)
        return rid, prepared, None
    except (RowError, EngineError) as exc:
        return rid, None, as_row_error(exc)
    except Exception as exc:  # whatever one row does, it becomes its own error row; the batch goes on
        return rid, None, RowError(f"the row could not be prepared: {type(exc).__name__}: {exc}")


def _prepared_columns(results: Sequence[tuple[str | None, Prepared | None, RowError | None]]) -> dict[str, list]:
    out: dict[str, list] = {name: [] for name in PREPARED.names}
    for rid, prepared, error in results:
        out[ID].append(rid)
        out[PROMPT].append(prepared.prompt if prepared else None)
        out[REQUEST].append(prepared.request if prepared else None)
        out[ERROR].append(safe_text(str(error)) if error else None)
        out[CODE].append(error.code if error else None)
        out[PARAM].append(error.param if error else None)
    return out


# --- a file job's raw rows ----------------------------------------------------------------------------------------

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


def prepare_files(batch: pa.Table, spec: StageSpec, skip_ref: ray.ObjectRef | SkipSets) -> pa.Table:
    """Raw file rows (jobs/sources.py) prepared; rows an earlier run committed are dropped here."""
    data = columns(batch)
    done, duplicates = _skip_sets(skip_ref)
    kind = cached_kind(spec)
    validator = cached_validator(spec.model_dir, spec.max_model_len)
    kept: dict[str, list] = {"source": [], "line": [], "raw": []}
    results = []
    for source, line, raw, read_error, path, read_code in zip(
        data["source"], data["line"], data["raw"], data["read_error"], data["path"], data["read_code"], strict=True
    ):
        key = (str(source), int(line))
        if key in done:
            continue
        identify = functools.partial(_file_record, kind, raw, read_error, read_code, str(path), key[1])
        refuse = functools.partial(_refuse_duplicate, key in duplicates)
        results.append(prepare_row(kind, validator, identify, refuse))
        for name, value in (("source", key[0]), ("line", key[1]), ("raw", raw)):
            kept[name].append(value)
    return table({**kept, **_prepared_columns(results)}, FILE_PREPARED_SCHEMA)


def _file_record(
    kind: JobKind, raw: str, read_error: str | None, read_code: str | None, path: str, line: int
) -> Identified:
    if read_error is not None:
        raise RowError(read_error, code=read_code or "malformed_row")
    try:
        record = parse_record(raw)
    except ValueError as exc:
        raise RowError(str(exc), code="invalid_json") from exc
    return kind.row_id(record, path, line), record


def _refuse_duplicate(duplicate: bool, rid: str | None) -> None:
    if duplicate:
        raise RowError(f"duplicate id {rid!r}: an earlier row has it", code="duplicate_id")


def prepare_stage(spec: StageSpec) -> Stage:
    """A file job's prepare stage: raw rows in (jobs/sources.RAW_SCHEMA), prepared rows out."""
    return Stage(
        "prepare",
        prepare_files,
        needs=("source", "line", "raw", "read_error", "path", "read_code"),
        produces=FILE_PREPARED_SCHEMA,
        fn_kwargs={"spec": spec},
        map_kwargs={"batch_size": spec.config.pool.batch_size},
        run_inputs=("skip_ref",),
    )


# --- a Dataset's rows (the Python API) ------------------------------------------------------------------------------


def content_id(record: Mapping[str, Any]) -> str:
    """A row without an id: a hash of its columns and values (nulls left out), the same in any block or run."""
    text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return "row-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def dataset_row_id(kind: JobKind, record: dict[str, Any]) -> str | None:
    """The kind's own id where it has one (OpenAI Batch: ``custom_id``); else the id column, else content_id.

    A file job's fallback is ``@<path>:<line>``, which a Dataset row does not have.
    """
    id_column = kind.config.input.id_column
    if type(kind).row_id is not JobKind.row_id or (id_column and record.get(id_column) is not None):
        return kind.row_id(record, NO_PATH, 0)
    return content_id(record)


def _rows(batch: pa.Table) -> list[dict[str, Any] | Exception]:
    """Each row as Python values, or the exception converting that one row raised."""
    try:
        return batch.to_pylist()
    except Exception:
        out: list[dict[str, Any] | Exception] = []
        for i in range(batch.num_rows):
            try:
                out.append(batch.slice(i, 1).to_pylist()[0])
            except Exception as exc:  # e.g. a value Arrow cannot turn into Python
                out.append(exc)
        return out


def kept_columns(batch: pa.Table, keep: tuple[str, ...] | None, taken: Sequence[str]) -> dict[str, pa.ChunkedArray]:
    """The input columns to carry along; one named like an output (``taken``) becomes ``input_<name>``."""
    names = list(batch.column_names) if keep is None else list(keep)
    out: dict[str, Any] = {}
    used = set(taken)
    for name in names:
        renamed = name
        while renamed in used or (renamed in names and renamed != name):
            renamed = f"input_{renamed}"
        used.add(renamed)
        out[renamed] = batch.column(name) if name in batch.column_names else pa.nulls(batch.num_rows)
    return out


def _dataset_record(kind: JobKind, adapter: Columns, row: dict[str, Any] | Exception) -> Identified:
    if isinstance(row, Exception):
        raise row
    record = adapter.record(row)
    return dataset_row_id(kind, record), record


def prepare_dataset(batch: pa.Table, spec: StageSpec, keep: tuple[str, ...] | None) -> pa.Table:
    """A Dataset's rows prepared; the kept input columns (``keep``; None: all) ride along."""
    kind = cached_kind(spec)
    adapter = COLUMNS[kind.kind](kind.task)
    validator = cached_validator(spec.model_dir, spec.max_model_len)
    identified = (functools.partial(_dataset_record, kind, adapter, row) for row in _rows(batch))
    results = [prepare_row(kind, validator, identify) for identify in identified]
    kept = kept_columns(batch, keep, [*output_schema(spec.config).names, *PREPARED.names])
    prepared = _prepared_columns(results)
    return pa.table({**kept, **{name: pa.array(prepared[name], pa.string()) for name in PREPARED.names}})


def dataset_prepare_stage(spec: StageSpec, keep: tuple[str, ...] | None) -> Stage:
    """The Python API's prepare stage: any columns in, the kept ones and the prepared columns out."""
    return Stage(
        "prepare",
        prepare_dataset,
        needs=(),
        produces=PREPARED,
        fn_kwargs={"spec": spec, "keep": keep},
        map_kwargs={"batch_size": spec.config.pool.batch_size, "udf_modifying_row_count": False},
    )
