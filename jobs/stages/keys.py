"""Keys stage (a pass of its own, before the main one): each row's id, for the driver's duplicate check."""

from __future__ import annotations

import pyarrow as pa

from phifleet.jobs.kinds import job_kind
from phifleet.jobs.sources import parse_record
from phifleet.jobs.stages.base import Stage, StageSpec, columns, table

KEYS_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("line", pa.int64())])


def extract_keys(batch: pa.Table, spec: StageSpec) -> pa.Table:
    """Each row's id, or None where the row or its id cannot be parsed (the prepare stage reports why)."""
    kind = job_kind(spec.config, spec.model_name)
    data = columns(batch)
    ids: list[str | None] = []
    for line, raw, read_error, path in zip(data["line"], data["raw"], data["read_error"], data["path"], strict=True):
        rid = None
        if read_error is None:
            try:
                rid = kind.row_id(parse_record(raw), str(path), int(line))
            except Exception:  # malformed JSON, a RowError, anything: no id to check; prepare reports it
                rid = None
        ids.append(rid)
    return table({"id": ids, "source": data["source"], "line": data["line"]}, KEYS_SCHEMA)


def keys_stage(spec: StageSpec) -> Stage:
    needs = ("source", "line", "raw", "read_error", "path")
    return Stage("keys", extract_keys, needs, KEYS_SCHEMA, fn_kwargs={"spec": spec}, map_kwargs={"batch_size": None})
