"""Write stage (Ray tasks): commit each block's result and error rows as shards; return the shard's tallies."""

from __future__ import annotations

import pyarrow as pa

from phifleet.jobs.kinds import job_kind
from phifleet.jobs.sinks import ShardWriter
from phifleet.jobs.stages.base import Stage, StageSpec, columns, table

_S, _I = pa.string(), pa.int64()
SUMMARY_SCHEMA = pa.schema(
    [("shard", _S), ("ok", _I), ("errors", _I), ("prompt_tokens", _I), ("completion_tokens", _I), ("labels", _S)]
)


def write(batch: pa.Table, spec: StageSpec) -> pa.Table:
    if batch.num_rows == 0:
        return SUMMARY_SCHEMA.empty_table()
    summary = ShardWriter(job_kind(spec.config, spec.model_name)).write(columns(batch))
    return table({k: [v] for k, v in summary.items()}, SUMMARY_SCHEMA)


def write_stage(spec: StageSpec) -> Stage:
    return Stage(
        "write",
        write,
        needs=("source", "line", "id", "raw", "error", "error_code", "param", "output"),
        produces=SUMMARY_SCHEMA,
        fn_kwargs={"spec": spec},
        # One shard per replica batch: a crash loses at most a batch in flight.
        map_kwargs={"batch_size": spec.config.pool.batch_size},
    )
