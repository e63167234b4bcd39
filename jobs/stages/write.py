"""Write stage (Ray tasks, a file job's last stage): commit each block's result and error rows as shards; return
the shard's tallies."""

from __future__ import annotations

import pyarrow as pa

from phifleet.jobs.sinks import ShardWriter
from phifleet.jobs.stages.base import CODE, ERROR, ID, OUTPUT, PARAM, Stage, StageSpec, columns, table
from phifleet.jobs.stages.columns import cached_kind

_S, _I = pa.string(), pa.int64()
SUMMARY_SCHEMA = pa.schema(
    [("shard", _S), ("ok", _I), ("errors", _I), ("prompt_tokens", _I), ("completion_tokens", _I), ("labels", _S)]
)
# The writer's names for the stage columns it reads.
WRITER_COLUMNS = {"id": ID, "error": ERROR, "error_code": CODE, "param": PARAM, "output": OUTPUT}


def write(batch: pa.Table, spec: StageSpec) -> pa.Table:
    if batch.num_rows == 0:
        return SUMMARY_SCHEMA.empty_table()
    data = columns(batch.select(["source", "line", "raw", *WRITER_COLUMNS.values()]))
    rows = {"source": data["source"], "line": data["line"], "raw": data["raw"]}
    rows |= {name: data[column] for name, column in WRITER_COLUMNS.items()}
    summary = ShardWriter(cached_kind(spec)).write(rows)
    return table({k: [v] for k, v in summary.items()}, SUMMARY_SCHEMA)


def write_stage(spec: StageSpec) -> Stage:
    return Stage(
        "write",
        write,
        needs=("source", "line", "raw", *WRITER_COLUMNS.values()),
        produces=SUMMARY_SCHEMA,
        fn_kwargs={"spec": spec},
        # One shard per replica batch: a crash loses at most a batch in flight.
        map_kwargs={"batch_size": spec.config.pool.batch_size},
    )
