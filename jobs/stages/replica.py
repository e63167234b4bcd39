"""Replica stage (a pool of Ray actors): one engine per actor answers the prepared rows, batch by batch.

Rows that already carry an error pass through untouched; a row the engine refuses becomes an error row.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import ray

from phifleet.engine import Engine, EngineConfig
from phifleet.engine.errors import EngineError
from phifleet.jobs.kinds import job_kind
from phifleet.jobs.rows import Prepared
from phifleet.jobs.stages.base import Stage, StageSpec, columns, table

_S, _I = pa.string(), pa.int64()
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


class Replica:
    def __init__(self, spec: StageSpec) -> None:
        engine_config: EngineConfig = spec.config.engine.model_copy(
            update={"model": spec.model_dir, "served_model_name": spec.model_name}
        )
        self.engine = Engine(engine_config)
        self.kind = job_kind(spec.config, spec.model_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        data = columns(batch)
        n = len(data["source"])
        outputs: list[str | None] = [None] * n
        errors, codes = list(data["error"]), list(data["error_code"])
        todo = [i for i in range(n) if errors[i] is None]
        rows = [Prepared(str(data["id"][i]), str(data["prompt"][i]), str(data["request"][i])) for i in todo]
        for i, result in zip(todo, self.run_rows(rows), strict=True):
            if isinstance(result, Exception):
                errors[i], codes[i] = f"inference failed: {result}", "inference_error"
            else:
                outputs[i] = json.dumps(result)
        return table({**data, "error": errors, "error_code": codes, "output": outputs}, ANSWERED_SCHEMA)

    def run_rows(self, rows: list[Prepared]) -> list[dict[str, Any] | Exception]:
        """The whole batch at once; if any row fails it (whatever the exception), retry one by one so that
        row alone becomes an error row. A replica that cannot run even one row fails its task (Ray retries)."""
        if not rows:
            return []
        try:
            return list(self.kind.run(self.engine, rows))
        except Exception as batch_error:
            results: list[dict[str, Any] | Exception] = []
            for row in rows:
                try:
                    results.extend(self.kind.run(self.engine, [row]))
                except Exception as exc:
                    results.append(exc)
            if len(rows) > 1 and all(isinstance(r, Exception) and not isinstance(r, EngineError) for r in results):
                raise batch_error  # every row failed unexpectedly: the replica, not the rows, is broken
            return results


def replica_stage(spec: StageSpec, replica: type[Replica] = Replica, **constructor_kwargs: Any) -> Stage:
    """The actor pool; ``replica`` may be a subclass (the fault-tolerance tests pass one that crashes once)."""
    pool = spec.config.pool
    return Stage(
        "replica",
        replica,
        needs=("source", "line", "id", "prompt", "request", "raw", "error", "error_code", "param"),
        produces=ANSWERED_SCHEMA,
        fn_constructor_kwargs={"spec": spec, **constructor_kwargs},
        map_kwargs={
            "compute": ray.data.ActorPoolStrategy(min_size=pool.min_replicas, max_size=pool.max_replicas),
            "num_cpus": pool.num_cpus,
            "num_gpus": pool.num_gpus or None,
            "batch_size": pool.batch_size,
        },
    )
