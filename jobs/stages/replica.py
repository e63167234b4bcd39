"""Replica stage (a pool of Ray actors): one engine per actor answers the prepared rows, batch by batch.

Rows that already carry an error pass through untouched; a row the engine refuses becomes an error row. Every
other column a row carries (a file row's origin, a Dataset's own columns) rides along.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import ray

from phifleet.engine import Engine, EngineConfig
from phifleet.engine.errors import EngineError
from phifleet.jobs.kinds import job_kind
from phifleet.jobs.rows import Prepared, RowError, safe_text
from phifleet.jobs.stages.base import CODE, ERROR, ID, OUTPUT, PROMPT, REQUEST, Stage, StageSpec

ANSWERED = pa.schema([(ERROR, pa.string()), (CODE, pa.string()), (OUTPUT, pa.string())])


class Replica:
    def __init__(self, spec: StageSpec) -> None:
        engine_config: EngineConfig = spec.config.engine.model_copy(
            update={"model": spec.model_dir, "served_model_name": spec.model_name}
        )
        self.engine = Engine(engine_config)
        self.kind = job_kind(spec.config, spec.model_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors, codes = batch.column(ERROR).to_pylist(), batch.column(CODE).to_pylist()
        ids, prompts, requests = (batch.column(c).to_pylist() for c in (ID, PROMPT, REQUEST))
        todo = [i for i, e in enumerate(errors) if e is None]
        rows = [Prepared(str(ids[i]), str(prompts[i]), str(requests[i] or "")) for i in todo]
        outputs: list[str | None] = [None] * batch.num_rows
        for i, result in zip(todo, self.run_rows(rows), strict=True):
            if isinstance(result, RowError):  # the kind judged the answer (an unfinished or invalid object)
                errors[i], codes[i] = safe_text(str(result)), result.code
            elif isinstance(result, Exception):
                errors[i], codes[i] = safe_text(f"inference failed: {result}"), "inference_error"
            else:
                outputs[i] = json.dumps(result)
        batch = batch.drop_columns([PROMPT, REQUEST, ERROR, CODE])  # prompts are done with: less to ship
        for name, values in ((ERROR, errors), (CODE, codes), (OUTPUT, outputs)):
            batch = batch.append_column(name, pa.array(values, pa.string()))
        return batch

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
        needs=(ID, PROMPT, REQUEST, ERROR, CODE),
        produces=ANSWERED,
        fn_constructor_kwargs={"spec": spec, **constructor_kwargs},
        map_kwargs={
            "compute": ray.data.ActorPoolStrategy(min_size=pool.min_replicas, max_size=pool.max_replicas),
            "num_cpus": pool.num_cpus,
            "num_gpus": pool.num_gpus or None,
            "batch_size": pool.batch_size,
            "udf_modifying_row_count": False,
        },
        keeps_input=True,
        drops=(PROMPT, REQUEST),
    )
