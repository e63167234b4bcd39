"""What a job kind is: everything that differs between label, generate and batch jobs, for one row at a time.

The stages and the writer hold a ``JobKind`` and never ask which kind it is: a new kind is a new
subclass (one file in this folder) registered in ``phifleet.jobs.kinds``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import pyarrow as pa

from phifleet.engine.validation import RequestValidator
from phifleet.jobs.config import JobConfig
from phifleet.jobs.rows import Prepared, RowError, row_id

if TYPE_CHECKING:
    from phifleet.engine.engine import Engine  # only a type here: the CPU stages never load the engine

TaskT = TypeVar("TaskT")


@dataclass(frozen=True)
class Tally:
    """What one result row adds to the shard's and the manifest's counts."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    label: str | None = None


class JobKind(ABC, Generic[TaskT]):
    """One kind of job: a row's id, its prompt (CPU stage), its answer (replica), its result or error row.

    ``prepare`` raises RowError (or the engine's InvalidRequestError) for a bad row and ``run`` raises
    EngineError for a batch the engine refuses; the stages turn both into error rows, one per input row.
    """

    kind: ClassVar[str]

    def __init__(self, config: JobConfig, model_name: str) -> None:
        self.config = config
        self.task: TaskT = config.task  # type: ignore[assignment]
        self.model_name = model_name

    @property
    def output_format(self) -> str:
        """Format of the result shards."""
        return self.config.output.format

    def row_id(self, record: dict[str, Any], path: str, line: int) -> str | None:
        """The row's id for duplicates, results and errors; raises RowError for an unusable id. ``path`` is the
        file's path under the input root (generated ids are ``@<path>:<line>``, ``rows.generated_id``)."""
        return row_id(record, self.config.input.id_column, path, line)

    @abstractmethod
    def prepare(self, record: dict[str, Any], rid: str | None, validator: RequestValidator) -> Prepared:
        """Render and validate one row on a CPU worker, with the checks the engine itself applies."""

    @abstractmethod
    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any]]:
        """Answer a batch of prepared rows on a replica: one JSON-able output per row, in order."""

    def result_row(self, rid: str, output: dict[str, Any], source: str, line: int) -> dict[str, Any]:
        return {"id": rid, **output, "model": self.model_name, "source": source, "line": line}

    def result_schema(self) -> pa.Schema | None:
        """The result shards' Arrow schema when the kind knows it (typed columns in every shard); None: inferred."""
        return None

    def error_row(self, rid: str | None, error: RowError, source: str, line: int, raw: str) -> dict[str, Any]:
        return {"id": rid, "source": source, "line": line, "error": str(error), "code": error.code, "raw": raw}

    def tally(self, output: dict[str, Any]) -> Tally:
        return Tally(output.get("prompt_tokens", 0), output.get("completion_tokens", 0))

    def finish(self, manifest: dict[str, Any], labels: Counter[str]) -> None:
        """Add this kind's part to the manifest once every shard is committed (``labels``: all runs' counts)."""
