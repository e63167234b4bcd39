"""Label, generate and OpenAI Batch on Ray Datasets: a Dataset in, a lazy Dataset out, one output row per input row.

The shape of ``ray.data.llm``'s ``build_llm_processor(config)(ds)``: three ``map_batches`` steps, each returning
the batch it was given with columns added, so every output row still carries its own input columns (no join back):

1. **preprocess** (CPU tasks): per row, the kind's ``prepare(record, rid, validator)``: the prompt rendered and
   checked with the engine's own validator; any exception becomes that row's error.
2. **engine** (an actor pool, one ``Engine`` per actor): the kind's ``run`` on the good rows of a batch; if the
   batch fails, one row at a time, so a bad row fails alone (the file jobs' ``Replica``, subclassed).
3. **postprocess** (CPU tasks): each output expanded into typed columns, the internal columns dropped.

The kinds, the validator, the replica and the pydantic models are the file jobs' own
(``phifleet.jobs.pipeline.run_job``), so both give the same answers for the same rows. Unlike a file job there is
no output folder: nothing is resumed, duplicate ids are not checked, and the caller decides where rows go
(``write_parquet``, ``iter_rows``, another ``map_batches``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import pyarrow as pa
import ray
from pydantic import BaseModel, ConfigDict

from phifleet.engine.config import EngineConfig
from phifleet.engine.errors import EngineError
from phifleet.engine.loading import resolve_model
from phifleet.jobs.config import (
    BatchTask,
    GenerateTask,
    InputConfig,
    JobConfig,
    LabelTask,
    OutputConfig,
    PoolConfig,
)
from phifleet.jobs.errors import JobInputError
from phifleet.jobs.kinds import JobKind, job_kind
from phifleet.jobs.rows import Prepared, RowError, safe_text
from phifleet.jobs.sources import expand_paths, format_of
from phifleet.jobs.stages import Replica, StageSpec, replica_stage
from phifleet.jobs.stages.prepare import as_row_error, cached_validator
from phifleet.protocol.batch import BatchLine
from phifleet.protocol.limits import RequestLimits

DatasetLike = ray.data.Dataset | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
ModelLike = EngineConfig | Mapping[str, Any] | str | os.PathLike[str] | None
PoolLike = PoolConfig | Mapping[str, Any] | None
KeepColumns = bool | Sequence[str]

# Columns that live only between the steps; the prefix keeps them apart from any input column.
_P = "__phifleet_"
ID, PROMPT, REQUEST, ERROR, CODE, PARAM, OUTPUT = (
    f"{_P}{n}" for n in ("id", "prompt", "request", "error", "error_code", "param", "output")
)
# Every output row ends with these two: null on success, the reason and its code on an error row.
ERROR_COLUMNS = pa.schema([("error", pa.string()), ("error_code", pa.string())])
# Where a job config wants a path: the API reads a Dataset and writes nothing.
NO_PATH = "<ray.data.Dataset>"
READERS = {"jsonl": "read_json", "parquet": "read_parquet", "csv": "read_csv"}


class _Options(BaseModel):
    """The API's own arguments, validated like the job models (a ValidationError names the field)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    keep_columns: bool | list[str] | tuple[str, ...] = True


# --- the public functions ---------------------------------------------------------------------------------------


def label(
    ds: DatasetLike,
    labels: Sequence[str],
    *,
    text_column: str = "text",
    instruction: str | None = None,
    model: ModelLike = None,
    pool: PoolLike = None,
    keep_columns: KeepColumns = True,
) -> ray.data.Dataset:
    """Classify each row's ``text_column`` into one of ``labels`` (label scoring, no generation).

    Returns a lazy Dataset: the input columns (``keep_columns``) then ``label``, ``probability``, ``logprobs``
    (a struct with one float field per label, in ``labels`` order), ``prompt_tokens``, ``error``, ``error_code``.
    """
    task = LabelTask(labels=labels, instruction=instruction)  # type: ignore[arg-type]
    return _process(ds, task, model, pool, keep_columns, text_column=text_column)


def generate(
    ds: DatasetLike,
    prompt_template: str,
    *,
    system: str | None = None,
    max_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    stop: str | Sequence[str] = (),
    model: ModelLike = None,
    pool: PoolLike = None,
    keep_columns: KeepColumns = True,
) -> ray.data.Dataset:
    """Fill ``prompt_template`` (``{column}`` placeholders) from each row and generate a completion for it.

    With ``seed``, each row samples with ``seed`` + a hash of its row id (the ``id`` column, else a hash of the
    row's content), so a row gets the same completion in any batch, replica or run. Returns a lazy Dataset: the
    input columns then ``text``, ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, ``error``,
    ``error_code``.
    """
    task = GenerateTask(
        prompt_template=prompt_template,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=[stop] if isinstance(stop, str) else stop,  # type: ignore[arg-type]
    )
    return _process(ds, task, model, pool, keep_columns)


def batch(
    ds: DatasetLike,
    *,
    model: ModelLike = None,
    pool: PoolLike = None,
    keep_columns: KeepColumns = True,
    limits: RequestLimits | Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    """Answer OpenAI Batch rows (``custom_id``, ``method``, ``url``, ``body``: a struct or a JSON string).

    ``limits`` bound what one row's request may ask for, as the server's. Returns a lazy Dataset: the input
    columns then ``response`` (the OpenAI response body as JSON: a completion, or the 400 error body of a request
    OpenAI would refuse), ``status_code`` (200, 400, or null where the row is no request at all),
    ``prompt_tokens``, ``completion_tokens``, ``error``, ``error_code``.
    """
    task = BatchTask() if limits is None else BatchTask(limits=limits)  # type: ignore[arg-type]
    return _process(ds, task, model, pool, keep_columns)


# --- planning (on the driver) -------------------------------------------------------------------------------------


def job_config(
    task: LabelTask | GenerateTask | BatchTask, model: ModelLike, pool: PoolLike, text_column: str = "text"
) -> JobConfig:
    """The file jobs' config for an API call, validated by the same models (input and output are placeholders)."""
    return JobConfig(
        input=InputConfig(path=NO_PATH, text_column=text_column),
        output=OutputConfig(path=NO_PATH),
        task=task,
        engine=engine_config(model),
        pool=PoolConfig.model_validate(pool if pool is not None else {}),
    )


def engine_config(model: ModelLike) -> EngineConfig:
    """None: the shipped tiny model; a string or path: a model directory, hub id or 'phi4-tiny'; else the fields."""
    if model is None:
        return EngineConfig()
    if isinstance(model, str | os.PathLike):
        return EngineConfig(model=os.fspath(model))
    return EngineConfig.model_validate(model)


def _process(
    ds: DatasetLike,
    task: LabelTask | GenerateTask | BatchTask,
    model: ModelLike,
    pool: PoolLike,
    keep_columns: KeepColumns,
    text_column: str = "text",
) -> ray.data.Dataset:
    """Validate everything, find the input, resolve the model once, then chain the three lazy steps."""
    keep = _keep(_Options(keep_columns=keep_columns).keep_columns)  # type: ignore[arg-type]
    config = job_config(task, model, pool, text_column)
    source = _source(ds)
    resolved = resolve_model(config.engine)
    spec = StageSpec(config.model_dump_json(), str(resolved.path), resolved.context_window, resolved.served_name)
    data = source if isinstance(source, ray.data.Dataset) else _read(*source)
    if keep:
        schema = data.schema(fetch_if_missing=False)  # only when known without running anything
        missing = [c for c in keep if schema is not None and c not in schema.names]
        if missing:
            raise ValueError(f"keep_columns names columns the input does not have: {missing} (it has {schema.names})")
    return build_steps(spec, keep)(data)


def build_steps(spec: StageSpec, keep: tuple[str, ...] | None) -> Callable[[ray.data.Dataset], ray.data.Dataset]:
    """``ds -> ds``: preprocess (tasks) -> engine (actor pool) -> postprocess (tasks); nothing runs until used."""
    pool = spec.config.pool
    same_rows = {"batch_format": "pyarrow", "udf_modifying_row_count": False}
    engine = replica_stage(spec, ApiReplica)
    engine = replace(engine, map_kwargs={**engine.map_kwargs, "udf_modifying_row_count": False})

    def steps(ds: ray.data.Dataset) -> ray.data.Dataset:
        ds = ds.map_batches(preprocess, batch_size=pool.batch_size, fn_kwargs={"spec": spec, "keep": keep}, **same_rows)
        ds = engine.apply(ds, {})
        return ds.map_batches(postprocess, batch_size=None, fn_kwargs={"spec": spec}, **same_rows)

    return steps


def _keep(keep_columns: bool | Sequence[str]) -> tuple[str, ...] | None:
    """None: every input column; otherwise the ones named (none for False)."""
    if keep_columns is True:
        return None
    if keep_columns is False:
        return ()
    return tuple(dict.fromkeys(keep_columns))


def _source(ds: DatasetLike) -> ray.data.Dataset | tuple[str, list[str]]:
    """The Dataset itself, or (format, file URLs) for paths: files, directories, globs, fsspec URLs."""
    if isinstance(ds, ray.data.Dataset):
        return ds
    if isinstance(ds, str | os.PathLike):
        paths = [ds]
    elif isinstance(ds, Sequence) and ds and all(isinstance(p, str | os.PathLike) for p in ds):
        paths = list(ds)
    else:
        raise TypeError(f"ds must be a ray.data.Dataset, a path or a list of paths, got {type(ds).__name__}")
    urls = sorted({url for p in paths for url in expand_paths(os.fspath(p))})
    formats = sorted({format_of(url, "auto") for url in urls})
    if len(formats) > 1:
        raise JobInputError(f"the input mixes formats {formats}: pass files of one format, or a ray.data.Dataset")
    return formats[0], urls


def _read(fmt: str, urls: list[str]) -> ray.data.Dataset:
    return getattr(ray.data, READERS[fmt])(urls, file_extensions=None)


# --- what each kind's outputs look like as columns ------------------------------------------------------------------


class Columns:
    """One kind's output columns: their types, a result's values, an error row's values (null unless overridden)."""

    kind: ClassVar[str]

    def __init__(self, task: Any) -> None:
        self.task = task

    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row as the kind reads it: a null is a missing value (Arrow has no 'absent'), at any depth."""
        return _without_nulls(row)

    def ok(self, output: dict[str, Any]) -> dict[str, Any]:
        return {name: output[name] for name in self.schema().names}

    def failed(self, rid: str | None, error: str, code: str, param: str | None) -> dict[str, Any]:
        return {}


class LabelColumns(Columns):
    kind = "label"

    def schema(self) -> pa.Schema:
        logprobs = pa.struct([(name, pa.float64()) for name in self.task.labels])  # one shape in every block
        return pa.schema(
            [
                ("label", pa.string()),
                ("probability", pa.float64()),
                ("logprobs", logprobs),
                ("prompt_tokens", pa.int64()),
            ]
        )

    def ok(self, output: dict[str, Any]) -> dict[str, Any]:
        return {**super().ok(output), "logprobs": {name: output["logprobs"][name] for name in self.task.labels}}


class GenerateColumns(Columns):
    kind = "generate"

    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                ("text", pa.string()),
                ("finish_reason", pa.string()),
                ("prompt_tokens", pa.int64()),
                ("completion_tokens", pa.int64()),
            ]
        )


class BatchColumns(Columns):
    kind = "batch"

    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                ("response", pa.string()),
                ("status_code", pa.int64()),
                ("prompt_tokens", pa.int64()),
                ("completion_tokens", pa.int64()),
            ]
        )

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        record = super().record(row)
        if isinstance(record.get("body"), str):  # a JSON body keeps its exact types (Arrow structs unify them)
            try:
                record["body"] = json.loads(record["body"])
            except (json.JSONDecodeError, RecursionError) as exc:
                raise RowError(f"body is not valid JSON: {exc}", code="invalid_json", param="body") from None
        return record

    def ok(self, output: dict[str, Any]) -> dict[str, Any]:
        usage = output["usage"]
        return {
            "response": json.dumps(output["body"], ensure_ascii=False),
            "status_code": 200,
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
        }

    def failed(self, rid: str | None, error: str, code: str, param: str | None) -> dict[str, Any]:
        """As in OpenAI's error file: a request OpenAI would refuse gets its 400 body; a non-request gets none."""
        line = BatchLine.failed(rid, 0, error, code, param)
        if line.response is None:
            return {}
        return {
            "response": json.dumps(line.response.body, ensure_ascii=False),
            "status_code": line.response.status_code,
        }


COLUMNS: dict[str, type[Columns]] = {c.kind: c for c in (LabelColumns, GenerateColumns, BatchColumns)}


def output_schema(config: JobConfig) -> pa.Schema:
    """The columns every output row has after its input columns."""
    outputs = COLUMNS[config.task.kind](config.task).schema()
    return pa.schema([*outputs, *ERROR_COLUMNS])


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# --- row ids ------------------------------------------------------------------------------------------------------


def content_id(record: Mapping[str, Any]) -> str:
    """A row without an id: a hash of its columns and values (nulls left out), the same in any block or run."""
    text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return "row-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def api_row_id(kind: JobKind, record: dict[str, Any]) -> str | None:
    """The kind's own id where it has one (OpenAI Batch: ``custom_id``); else the id column, else content_id.

    A file job's fallback is ``<file>:<line>``, which a Dataset row does not have.
    """
    id_column = kind.config.input.id_column
    if type(kind).row_id is not JobKind.row_id or (id_column and record.get(id_column) is not None):
        return kind.row_id(record, NO_PATH, 0)
    return content_id(record)


# --- the three steps (on Ray workers) -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _kind(spec: StageSpec) -> JobKind:
    return job_kind(spec.config, spec.model_name)


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
    columns: dict[str, Any] = {}
    used = set(taken)
    for name in names:
        out = name
        while out in used or (out in names and out != name):
            out = f"input_{out}"
        used.add(out)
        columns[out] = batch.column(name) if name in batch.column_names else pa.nulls(batch.num_rows)
    return columns


def preprocess(batch: pa.Table, spec: StageSpec, keep: tuple[str, ...] | None) -> pa.Table:
    """Step 1 (CPU tasks): every row prepared by the kind, or an error row; the kept input columns ride along."""
    kind = _kind(spec)
    adapter = COLUMNS[kind.kind](kind.task)
    validator = cached_validator(spec.model_dir, spec.max_model_len)
    out: dict[str, list[Any]] = {c: [] for c in (ID, PROMPT, REQUEST, ERROR, CODE, PARAM)}
    for row in _rows(batch):
        rid: str | None = None
        prepared: Prepared | None = None
        error: RowError | None = None
        try:
            if isinstance(row, Exception):
                raise row
            record = adapter.record(row)
            rid = api_row_id(kind, record)
            prepared = kind.prepare(record, rid, validator)
        except (RowError, EngineError) as exc:
            error = as_row_error(exc)
        except Exception as exc:  # whatever one row does, it becomes its own error row; the batch goes on
            error = RowError(f"the row could not be prepared: {type(exc).__name__}: {exc}")
        out[ID].append(rid)
        out[PROMPT].append(prepared.prompt if prepared else None)
        out[REQUEST].append(prepared.request if prepared else None)
        out[ERROR].append(safe_text(str(error)) if error else None)
        out[CODE].append(error.code if error else None)
        out[PARAM].append(error.param if error else None)
    kept = kept_columns(batch, keep, output_schema(spec.config).names)
    return pa.table({**kept, **{name: pa.array(values, pa.string()) for name, values in out.items()}})


class ApiReplica(Replica):
    """Step 2 (one actor per engine): the file jobs' replica on the API's columns; error rows pass through."""

    def __call__(self, batch: pa.Table) -> pa.Table:  # type: ignore[override]
        errors, codes = batch.column(ERROR).to_pylist(), batch.column(CODE).to_pylist()
        ids, prompts, requests = (batch.column(c).to_pylist() for c in (ID, PROMPT, REQUEST))
        todo = [i for i, e in enumerate(errors) if e is None]
        rows = [Prepared(str(ids[i]), str(prompts[i]), str(requests[i] or "")) for i in todo]
        outputs: list[str | None] = [None] * batch.num_rows
        for i, result in zip(todo, self.run_rows(rows), strict=True):
            if isinstance(result, Exception):
                errors[i], codes[i] = safe_text(f"inference failed: {result}"), "inference_error"
            else:
                outputs[i] = json.dumps(result)
        batch = batch.drop_columns([PROMPT, REQUEST, ERROR, CODE])  # prompts are done with: less to ship
        for name, values in ((ERROR, errors), (CODE, codes), (OUTPUT, outputs)):
            batch = batch.append_column(name, pa.array(values, pa.string()))
        return batch


def postprocess(batch: pa.Table, spec: StageSpec) -> pa.Table:
    """Step 3 (CPU tasks): outputs as typed columns after the input columns; the internal columns dropped."""
    kind = _kind(spec)
    adapter = COLUMNS[kind.kind](kind.task)
    schema = output_schema(spec.config)
    values: dict[str, list[Any]] = {name: [] for name in schema.names}
    columns = (batch.column(c).to_pylist() for c in (ID, OUTPUT, ERROR, CODE, PARAM))
    for rid, output, error, code, param in zip(*columns, strict=True):
        row: dict[str, Any] = {}
        if error is None:
            try:
                row = adapter.ok(json.loads(output))
            except Exception as exc:  # an output this step cannot read is that row's error, not the batch's
                error, code = safe_text(f"the output could not be read: {type(exc).__name__}: {exc}"), "internal_error"
        if error is not None:
            row = {**adapter.failed(rid, error, code or "invalid_request", param), "error": error, "error_code": code}
        for name in schema.names:
            values[name].append(row.get(name))
    table = batch.drop_columns([c for c in batch.column_names if c.startswith(_P)])
    for field in schema:
        table = table.append_column(field, pa.array(values[field.name], field.type))
    return table
