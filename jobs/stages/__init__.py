"""The stages of a job, one per file: keys (a file job's duplicate pass), prepare, replica, then a sink.

File jobs (the CLI, ``python -m phifleet.jobs``, the RayJob) and the Python API (``phifleet.label`` & co.) run one
stage list, ``build_stages``: the same prepare step per row, the same replica, the same kinds. Only the ends differ:
where rows come from (files, with line ids and resume; or a Dataset's rows) and where answers go (committed shards;
or typed columns beside the row's own).
"""

from __future__ import annotations

from typing import Any, Literal

from phifleet.jobs.stages.base import Stage, StageSpec, StageWiringError, check_stages
from phifleet.jobs.stages.columns import columns_stage, output_schema
from phifleet.jobs.stages.keys import keys_stage
from phifleet.jobs.stages.prepare import dataset_prepare_stage, prepare_stage
from phifleet.jobs.stages.replica import Replica, replica_stage
from phifleet.jobs.stages.write import SUMMARY_SCHEMA, write_stage


def build_stages(
    spec: StageSpec,
    rows: Literal["files", "dataset"],
    keep: tuple[str, ...] | None = None,
    replica: type[Replica] = Replica,
    **replica_kwargs: Any,
) -> list[Stage]:
    """prepare -> replica -> sink. ``files``: raw file rows in, one summary row per committed shard out;
    ``dataset``: any rows in, the kept columns (``keep``; None: all) and the outputs out, row for row."""
    engine = replica_stage(spec, replica, **replica_kwargs)
    if rows == "files":
        return [prepare_stage(spec), engine, write_stage(spec)]
    return [dataset_prepare_stage(spec, keep), engine, columns_stage(spec)]


def default_stages(spec: StageSpec) -> list[Stage]:
    """A file job's stages: raw rows -> prepared rows -> answers -> committed shards (one summary row per shard)."""
    return build_stages(spec, "files")


__all__ = [
    "SUMMARY_SCHEMA",
    "Replica",
    "Stage",
    "StageSpec",
    "StageWiringError",
    "build_stages",
    "check_stages",
    "default_stages",
    "keys_stage",
    "output_schema",
    "prepare_stage",
    "replica_stage",
    "write_stage",
]
