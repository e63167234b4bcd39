"""A job's pipeline as a declared list of named stages, each saying which columns it needs and which it yields.

Like ``ray.data.llm``'s processor: the list is checked before anything runs, so a stage whose input is
not what the stage before it produces fails at once with the stage's and the columns' names, instead
of a KeyError inside a Ray worker halfway through a job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import ray

from phifleet.jobs.config import JobConfig

# The columns a row carries between the stages, the same for file jobs and the Python API. The prefix keeps them apart
# from a Dataset's own columns, which ride along beside them.
_P = "__phifleet_"
ID, PROMPT, REQUEST, ERROR, CODE, PARAM, OUTPUT = (
    f"{_P}{n}" for n in ("id", "prompt", "request", "error", "error_code", "param", "output")
)
INTERNAL_PREFIX = _P


class StageWiringError(ValueError):
    """The stage list does not line up: a stage needs a column or a run input nobody provides."""


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


@dataclass(frozen=True)
class Stage:
    """One ``map_batches`` step over pyarrow blocks.

    ``fn`` is a function (run as Ray tasks) or a class (run as a pool of actors, one instance each).
    ``needs`` are the input columns it reads, ``produces`` the schema of every block it returns, and
    ``run_inputs`` the names of values only known once the run starts (filled in by ``apply``). A stage that
    ``keeps_input`` returns the columns it was given beside its own, less those it ``drops``.
    """

    name: str
    fn: Callable[..., Any] | type
    needs: tuple[str, ...]
    produces: pa.Schema
    fn_kwargs: Mapping[str, Any] = field(default_factory=dict)
    fn_constructor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    map_kwargs: Mapping[str, Any] = field(default_factory=dict)
    run_inputs: tuple[str, ...] = ()
    keeps_input: bool = False
    drops: tuple[str, ...] = ()

    def apply(self, ds: ray.data.Dataset, run_inputs: Mapping[str, Any]) -> ray.data.Dataset:
        kwargs: dict[str, Any] = dict(self.map_kwargs)
        fn_kwargs = {**self.fn_kwargs, **{k: run_inputs[k] for k in self.run_inputs}}
        if fn_kwargs:
            kwargs["fn_kwargs"] = fn_kwargs
        if self.fn_constructor_kwargs:
            kwargs["fn_constructor_kwargs"] = dict(self.fn_constructor_kwargs)
        return ds.map_batches(self.fn, batch_format="pyarrow", **kwargs)


def check_stages(
    stages: Sequence[Stage], source: Sequence[str], sink: Sequence[str] = (), run_inputs: Sequence[str] = ()
) -> None:
    """Raise StageWiringError unless each stage's needs are met by the one before it (the first by ``source``)
    and the last one produces ``sink``, the columns the driver reads."""
    if not stages:
        raise StageWiringError("a job needs at least one stage")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise StageWiringError(f"stage names must be unique, got {names}")
    available, giver = list(source), "the input"
    for stage in stages:
        missing = [c for c in stage.needs if c not in available]
        if missing:
            raise StageWiringError(
                f"stage {stage.name!r} needs columns {missing} that {giver} does not produce (it has {available})"
            )
        unknown = [k for k in stage.run_inputs if k not in run_inputs]
        if unknown:
            raise StageWiringError(
                f"stage {stage.name!r} needs run inputs {unknown}; the job provides {list(run_inputs)}"
            )
        kept = [c for c in available if c not in stage.drops] if stage.keeps_input else []
        available, giver = list(dict.fromkeys([*kept, *stage.produces.names])), f"stage {stage.name!r}"
    missing = [c for c in sink if c not in available]
    if missing:
        raise StageWiringError(f"the job reads columns {missing} that the last {giver} does not produce")


def columns(batch: pa.Table) -> dict[str, list]:
    """Plain Python values per column (numpy batches would turn all-null columns into NaN floats)."""
    return {name: batch.column(name).to_pylist() for name in batch.column_names}


def table(data: Mapping[str, list], schema: pa.Schema) -> pa.Table:
    """A block with a fixed schema, so an all-null column in one block still unifies with the next."""
    return pa.Table.from_pydict({name: data[name] for name in schema.names}, schema=schema)
