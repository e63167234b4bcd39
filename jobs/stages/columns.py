"""Columns sink (CPU tasks, the Python API's last stage): each row's output as typed columns after its own columns.

A file job writes the same outputs as shards instead (the write stage); what differs between the kinds here is one
small adapter per kind: its column types, a result's values, an error row's values.
"""

from __future__ import annotations

import functools
import json
from typing import Any, ClassVar

import pyarrow as pa

from phifleet.jobs.config import JobConfig
from phifleet.jobs.kinds import JobKind, job_kind
from phifleet.jobs.kinds.extract import ExtractShape
from phifleet.jobs.rows import RowError, safe_text
from phifleet.jobs.stages.base import CODE, ERROR, ID, INTERNAL_PREFIX, OUTPUT, PARAM, Stage, StageSpec
from phifleet.protocol.batch import BatchLine

# Every output row ends with these two: null on success, the reason and its code on an error row.
ERROR_COLUMNS = pa.schema([("error", pa.string()), ("error_code", pa.string())])


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


class ExtractColumns(Columns):
    kind = "extract"

    def __init__(self, task: Any) -> None:
        super().__init__(task)
        self.shape = ExtractShape(task)

    def schema(self) -> pa.Schema:
        return pa.schema(self.shape.output_fields())

    def ok(self, output: dict[str, Any]) -> dict[str, Any]:
        return self.shape.flatten(output)


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


COLUMNS: dict[str, type[Columns]] = {c.kind: c for c in (LabelColumns, GenerateColumns, ExtractColumns, BatchColumns)}


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


@functools.lru_cache(maxsize=4)
def cached_kind(spec: StageSpec) -> JobKind:
    """One kind per worker process and job (building it validates the config again)."""
    return job_kind(spec.config, spec.model_name)


def to_columns(batch: pa.Table, spec: StageSpec) -> pa.Table:
    """Outputs as typed columns after the row's own columns; the internal columns dropped."""
    kind = cached_kind(spec)
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
    table = batch.drop_columns([c for c in batch.column_names if c.startswith(INTERNAL_PREFIX)])
    for field in schema:
        table = table.append_column(field, pa.array(values[field.name], field.type))
    return table


def columns_stage(spec: StageSpec) -> Stage:
    return Stage(
        "columns",
        to_columns,
        needs=(ID, OUTPUT, ERROR, CODE, PARAM),
        produces=output_schema(spec.config),
        fn_kwargs={"spec": spec},
        map_kwargs={"batch_size": None, "udf_modifying_row_count": False},
        keeps_input=True,
        drops=(ID, OUTPUT, ERROR, CODE, PARAM),
    )
