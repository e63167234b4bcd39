"""Real crashes for the fault-tolerance tests: a job run whose replica process dies once, or whose driver is
SIGKILLed mid-job. Run as ``python -m tests.jobs.faults --config job.yaml ...`` from the repository root.

The product's stages stay free of test hooks: this wraps them. Ray workers import this module through
``runtime_env={"py_modules": [tests]}`` (Ray uploads the package and puts it on the workers' PYTHONPATH).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

import pyarrow as pa

import tests
from phifleet.jobs.config import JobConfig
from phifleet.jobs.pipeline import StagesFactory, run_job, summary_text
from phifleet.jobs.sinks import committed_count
from phifleet.jobs.stages import Stage, StageSpec, default_stages, replica_stage
from phifleet.jobs.stages.replica import Replica
from phifleet.jobs.stages.write import write


class CrashOnceReplica(Replica):
    """Kills its own process on its ``at_call``-th batch, once per job (``marker`` remembers it happened)."""

    def __init__(self, spec: StageSpec, marker: str, at_call: int) -> None:
        super().__init__(spec)
        self.marker, self.at_call, self.calls = Path(marker), at_call, 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.calls += 1
        if self.calls == self.at_call and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)


def write_then_kill_driver(batch: pa.Table, spec: StageSpec, driver_pid: int, after_shards: int) -> pa.Table:
    """The real writer; once ``after_shards`` shards are committed, SIGKILL the driver and die with it."""
    summary = write(batch, spec)
    if committed_count(spec.config.output.path) >= after_shards:
        os.kill(driver_pid, signal.SIGKILL)
        os._exit(1)  # this worker too, mid-block, as a machine failure would
    return summary


def faulty_stages(args: argparse.Namespace) -> StagesFactory:
    """The real stages, with the replica and/or the writer swapped for their crashing wrappers."""

    def build(spec: StageSpec) -> list[Stage]:
        stages = default_stages(spec)
        for i, stage in enumerate(stages):
            if stage.name == "replica" and args.crash_replica_at:
                stages[i] = replica_stage(spec, CrashOnceReplica, marker=args.marker, at_call=args.crash_replica_at)
            if stage.name == "write" and args.kill_driver_after_shards:
                kwargs = {**stage.fn_kwargs, "driver_pid": os.getpid(), "after_shards": args.kill_driver_after_shards}
                stages[i] = dataclasses.replace(stage, fn=write_then_kill_driver, fn_kwargs=kwargs)
        return stages

    return build


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--crash-replica-at", type=int, default=0)
    parser.add_argument("--marker", default="")
    parser.add_argument("--kill-driver-after-shards", type=int, default=0)
    args = parser.parse_args()

    manifest = run_job(
        JobConfig.from_file(args.config), stages=faulty_stages(args), runtime_env={"py_modules": [tests]}
    )
    print(summary_text(manifest))
    return 0 if manifest["counts"]["accounted"] else 1


if __name__ == "__main__":
    # Run the importable module's main, so Ray pickles CrashOnceReplica & co. by reference (tests.jobs.faults),
    # not by value as it would classes of __main__: the workers import them through py_modules.
    from tests.jobs.faults import main as module_main

    sys.exit(module_main())
