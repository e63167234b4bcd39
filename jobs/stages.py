"""The Ray Data stages of a job, in order: keys (duplicate check), prepare (CPU), replica (actors), write.

Each stage is a plain function or class over pyarrow-friendly column batches; they live in the
installed package so Ray workers can import them.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from phifleet.engine import Engine, EngineConfig
from phifleet.engine.errors import EngineError
from phifleet.engine.loading import load_tokenizer
from phifleet.jobs.config import BatchTask, GenerateTask, JobConfig, LabelTask
from phifleet.jobs.sinks import ShardWriter
from phifleet.jobs.sources import parse_record
from phifleet.jobs.tasks import BatchHandler, GenerateHandler, LabelHandler, Prepared, RowError, row_id

_S, _I = pa.string(), pa.int64()
KEYS_SCHEMA = pa.schema([("id", _S), ("source", _S), ("line", _I)])
PREPARED_SCHEMA = pa.schema(
    [
        ("source", _S),
        ("line", _I),
        ("id", _S),
        ("prompt", _S),
        ("reserve", _I),
        ("request", _S),
        ("raw", _S),
        ("error", _S),
        ("error_code", _S),
        ("param", _S),
    ]
)
ANSWERED_SCHEMA = pa.schema(
    [
        ("source", _S),
        ("line", _I),
        ("id", _S),
        ("raw", _S),
        ("error", _S),
        ("error_code", _S),
        ("param", _S),
        ("output", _S),
    ]
)
SUMMARY_SCHEMA = pa.schema(
    [("shard", _S), ("ok", _I), ("errors", _I), ("prompt_tokens", _I), ("completion_tokens", _I), ("labels", _S)]
)
PREPARED_COLUMNS = tuple(PREPARED_SCHEMA.names)


def columns(batch: pa.Table) -> dict[str, list]:
    """Plain Python values per column (numpy batches would turn all-null columns into NaN floats)."""
    return {name: batch.column(name).to_pylist() for name in batch.column_names}


def table(data: dict[str, list], schema: pa.Schema) -> pa.Table:
    """A block with a fixed schema, so an all-null column in one block still unifies with the next."""
    return pa.Table.from_pydict({name: data[name] for name in schema.names}, schema=schema)


@dataclass(frozen=True)
class StageSpec:
    """What every stage needs to know, resolved once on the driver and shipped to workers."""

    config_json: str
    model_dir: str
    max_model_len: int
    model_name: str

    @functools.cached_property
    def config(self) -> JobConfig:
        return JobConfig.model_validate_json(self.config_json)


@functools.lru_cache(maxsize=4)
def _tokenizer(model_dir: str):
    return load_tokenizer(Path(model_dir))


def make_handler(spec: StageSpec):
    task = spec.config.task
    if isinstance(task, LabelTask):
        tok = _tokenizer(spec.model_dir)
        label_tokens = max(len(tok.encode(label, add_special_tokens=False)) + 1 for label in task.labels)
        return LabelHandler(task, spec.config.input.text_column, label_tokens)
    if isinstance(task, GenerateTask):
        return GenerateHandler(task, spec.config.input.text_column)
    assert isinstance(task, BatchTask)
    return BatchHandler()


def _id_column(spec: StageSpec) -> str | None:
    return None if isinstance(spec.config.task, BatchTask) else spec.config.input.id_column


def extract_keys(batch: pa.Table, spec: StageSpec) -> pa.Table:
    """Pass 1: each row's id (None if it cannot be parsed), for the duplicate check on the driver."""
    batch = columns(batch)
    batch_task = isinstance(spec.config.task, BatchTask)
    ids: list[str | None] = []
    for source, line, raw, read_error in zip(
        batch["source"], batch["line"], batch["raw"], batch["read_error"], strict=True
    ):
        rid = None
        if read_error is None:
            try:
                record = parse_record(raw)
                if batch_task:
                    rid = record.get("custom_id") if isinstance(record.get("custom_id"), str) else None
                else:
                    rid = row_id(record, _id_column(spec), str(source), int(line))
            except (ValueError, RowError):
                rid = None
        ids.append(rid)
    return table({"id": ids, "source": batch["source"], "line": batch["line"]}, KEYS_SCHEMA)


def prepare(batch: pa.Table, spec: StageSpec, skip_ref: ray.ObjectRef) -> pa.Table:
    """CPU stage: parse, validate, render the prompt, check it fits the context window.

    Rows already written by an earlier run are dropped here; later occurrences of a duplicate id become errors.
    """
    batch = columns(batch)
    done, duplicates = _skip_sets(skip_ref)
    handler = make_handler(spec)
    tok = _tokenizer(spec.model_dir)
    out: dict[str, list] = {c: [] for c in PREPARED_COLUMNS}
    for source, line, raw, read_error in zip(
        batch["source"], batch["line"], batch["raw"], batch["read_error"], strict=True
    ):
        source, line = str(source), int(line)
        if (source, line) in done:
            continue
        rid, prepared, error, code, param = None, None, None, "invalid_request", None
        try:
            if read_error is not None:
                raise RowError(read_error, code="malformed_row")
            try:
                record = parse_record(raw)
            except ValueError as exc:
                raise RowError(str(exc), code="invalid_json") from exc
            rid = row_id(record, _id_column(spec), source, line) if _id_column(spec) else record.get("custom_id")
            prepared = handler.prepare(record, rid)
            rid = prepared.id
            if (source, line) in duplicates:
                raise RowError(f"duplicate id {rid!r}: an earlier row has it", code="duplicate_id")
            n = len(tok.encode(prepared.prompt, add_special_tokens=False))
            if n + prepared.reserve_tokens > spec.max_model_len:
                raise RowError(
                    f"prompt is {n} tokens and {prepared.reserve_tokens} more are needed for the answer, "
                    f"over the {spec.max_model_len}-token context window",
                    code="context_length_exceeded",
                )
        except RowError as exc:
            error, code, param = str(exc), exc.code, exc.param
            rid = rid if isinstance(rid, str) else None
        values = {
            "source": source,
            "line": line,
            "id": rid,
            "prompt": prepared.prompt if prepared and not error else "",
            "reserve": prepared.reserve_tokens if prepared and not error else 0,
            "request": prepared.request if prepared and not error else "",
            "raw": raw,
            "error": error,
            "error_code": code if error else None,
            "param": param,
        }
        for column, value in values.items():
            out[column].append(value)
    return table(out, PREPARED_SCHEMA)


_SKIP_CACHE: dict[str, tuple[frozenset, frozenset]] = {}


def _skip_sets(ref: ray.ObjectRef | tuple[frozenset, frozenset]) -> tuple[frozenset, frozenset]:
    """The (done, duplicate) key sets, fetched once per worker process from the object store."""
    if not isinstance(ref, ray.ObjectRef):
        return ref
    key = ref.hex()
    if key not in _SKIP_CACHE:
        _SKIP_CACHE.clear()
        _SKIP_CACHE[key] = ray.get(ref)
    return _SKIP_CACHE[key]


class Replica:
    """One engine per Ray actor. Rows that already carry an error pass through untouched."""

    def __init__(self, spec: StageSpec) -> None:
        self.spec = spec
        engine_config: EngineConfig = spec.config.engine.model_copy(
            update={"model": spec.model_dir, "served_model_name": spec.model_name}
        )
        self.engine = Engine(engine_config)
        self.handler = make_handler(spec)
        self.calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = columns(batch)
        self.calls += 1
        _maybe_crash_for_test(self.calls)
        n = len(batch["source"])
        outputs: list[str | None] = [None] * n
        errors = list(batch["error"])
        codes = list(batch["error_code"])
        todo = [i for i in range(n) if errors[i] is None]
        rows = [
            Prepared(str(batch["id"][i]), str(batch["prompt"][i]), int(batch["reserve"][i]), str(batch["request"][i]))
            for i in todo
        ]
        for i, result in zip(todo, self._run(rows), strict=True):
            if isinstance(result, Exception):
                errors[i], codes[i] = f"inference failed: {result}", "inference_error"
            else:
                outputs[i] = json.dumps(result)
        return table({**batch, "error": errors, "error_code": codes, "output": outputs}, ANSWERED_SCHEMA)

    def _run(self, rows: list[Prepared]) -> list[dict[str, Any] | Exception]:
        """The whole batch at once; if a row makes the engine refuse it, retry one by one to isolate it."""
        if not rows:
            return []
        try:
            return list(self.handler.run(self.engine, rows))
        except EngineError:
            results: list[dict[str, Any] | Exception] = []
            for row in rows:
                try:
                    results.extend(self.handler.run(self.engine, [row]))
                except EngineError as exc:
                    results.append(exc)
            return results


def _maybe_crash_for_test(calls: int) -> None:
    """Fault injection for the tests: kill this replica's process once, on its Nth call."""
    marker = os.environ.get("PHIFLEET_TEST_CRASH_REPLICA_MARKER")
    at = int(os.environ.get("PHIFLEET_TEST_CRASH_REPLICA_AT_CALL", "0"))
    if marker and calls == at and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)


def _maybe_kill_driver_for_test(spec: StageSpec) -> None:
    """Fault injection for the resume test: SIGKILL the driver once N shards are committed (a real crash)."""
    after = int(os.environ.get("PHIFLEET_TEST_KILL_DRIVER_AFTER_SHARDS", "0"))
    pid = os.environ.get("PHIFLEET_TEST_DRIVER_PID")
    if after and pid:
        from phifleet.jobs.sinks import committed_count

        if committed_count(spec.config.output.path) >= after:
            os.kill(int(pid), signal.SIGKILL)
            os._exit(1)  # and this worker with it, mid-block, as a machine failure would


def write(batch: pa.Table, spec: StageSpec) -> pa.Table:
    """Writer stage: commit this block's results and errors as shards; returns the shard's tallies."""
    if batch.num_rows == 0:
        return SUMMARY_SCHEMA.empty_table()
    summary = ShardWriter(spec.config, spec.model_name).write(columns(batch))
    _maybe_kill_driver_for_test(spec)
    return table({k: [v] for k, v in summary.items()}, SUMMARY_SCHEMA)
