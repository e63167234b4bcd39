"""The stages of a job, one per file, in pipeline order: keys (duplicate pass), prepare, replica, write."""

from __future__ import annotations

from phifleet.jobs.stages.base import Stage, StageSpec, StageWiringError, check_stages
from phifleet.jobs.stages.keys import keys_stage
from phifleet.jobs.stages.prepare import prepare_stage
from phifleet.jobs.stages.replica import Replica, replica_stage
from phifleet.jobs.stages.write import SUMMARY_SCHEMA, write_stage


def default_stages(spec: StageSpec) -> list[Stage]:
    """The main pass: raw rows -> prepared rows -> answers -> committed shards (one summary row per shard)."""
    return [prepare_stage(spec), replica_stage(spec), write_stage(spec)]


__all__ = [
    "SUMMARY_SCHEMA",
    "Replica",
    "Stage",
    "StageSpec",
    "StageWiringError",
    "check_stages",
    "default_stages",
    "keys_stage",
    "prepare_stage",
    "replica_stage",
    "write_stage",
]
