"""The job configuration: one pydantic model behind `phifleet label|generate|batch`, `python -m phifleet.jobs`
and the Helm chart's RayJob values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from phifleet.engine.config import EngineConfig
from phifleet.engine.structured_output import schema_problem
from phifleet.protocol.limits import RequestLimits

InputFormat = Literal["auto", "jsonl", "parquet", "csv"]
MAX_FIELD_BYTES = 1 << 20  # CSV fields up to 1 MiB (Python's csv module stops at 128 KiB)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(_Strict):
    path: str = Field(
        description=(
            "A file, a directory or a glob; a local path or an fsspec URL (file://, abfs://, az://, s3://, gs://). "
            "Azure Blob (adlfs) takes credentials from workload identity or AZURE_STORAGE_* variables."
        )
    )
    format: InputFormat = Field(default="auto", description="auto: by file extension (.jsonl/.json, .parquet, .csv).")
    text_column: str = Field(default="text", description="Column holding the text (label/generate jobs).")
    id_column: str | None = Field(
        default="id",
        description=(
            "Column holding a unique row id (a string; whole numbers become decimal strings). Rows without one get "
            "'@<path>:<line>', the file's path under the input root and its line (CSV, JSONL) or row (Parquet). "
            "None: always derive."
        ),
    )
    max_field_bytes: int = Field(
        default=MAX_FIELD_BYTES,
        ge=1,
        le=1 << 30,
        description="Largest CSV field read, in bytes (UTF-8); a row with a larger field becomes an error row.",
    )


class OutputConfig(_Strict):
    path: str = Field(
        description=(
            "Output directory (local or fsspec URL): new, empty, or one phifleet created; re-running the same job "
            "with it resumes the job."
        )
    )
    format: Literal["parquet", "jsonl"] = Field(
        default="parquet", description="Result shards' format (OpenAI Batch jobs always write JSONL)."
    )
    overwrite: bool = Field(
        default=False,
        description=(
            "Start afresh in an output folder phifleet created: its results, errors, index and manifest are removed "
            "(nothing else). Off: a re-run resumes, and stops if the job's config or input changed."
        ),
    )


class PoolConfig(_Strict):
    """The replica pool: one engine per Ray actor."""

    min_replicas: int = Field(default=1, ge=1, description="Actors kept alive; each loads the model once.")
    max_replicas: int = Field(default=1, ge=1, description="Ray Data grows the pool up to this under backlog.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (1 for Phi-4 at tp 1).")
    num_cpus: float = Field(
        default=0.5,
        gt=0,
        description="CPUs per replica. Keep it fractional on small machines: whole CPUs starve the read stage.",
    )
    batch_size: int = Field(
        default=64, ge=1, description="Rows per replica call. Large batches saturate compute; small ones fail cheaper."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> PoolConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class LabelTask(_Strict):
    kind: Literal["label"] = "label"
    labels: list[str] = Field(min_length=2, description="Candidate labels; each row gets exactly one.")
    instruction: str | None = Field(
        default=None, description="System instruction; '{labels}' is replaced by the comma-separated labels."
    )

    @field_validator("labels")
    @classmethod
    def _clean_labels(cls, labels: list[str]) -> list[str]:
        cleaned = [label.strip() for label in labels]
        if any(not label for label in cleaned):
            raise ValueError("labels must be non-empty")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("labels must be unique")
        return cleaned


class GenerateTask(_Strict):
    kind: Literal["generate"] = "generate"
    prompt_template: str = Field(description="User message; '{column}' placeholders are filled from the row.")
    system: str | None = Field(default=None, description="Optional system message.")
    max_tokens: int = Field(default=128, ge=1, description="Completion tokens to generate at most, per row.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 (the default) is greedy: reproducible.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1 disables it.")
    top_k: int = Field(default=0, ge=0, description="Sample among the k likeliest tokens; 0 disables it.")
    seed: int | None = Field(default=None, description="Per-row seed is seed + a hash of the row id.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a completion (not included).")


class ExtractTask(_Strict):
    """Fields of a JSON schema from each row, as typed columns (structured output, engine.structured_output)."""

    kind: Literal["extract"] = "extract"
    json_schema: dict[str, Any] = Field(
        alias="schema",
        description="The JSON schema of one row's object (an object schema with properties); on the command line "
        "a .json file's path or the JSON text.",
    )
    prompt_template: str = Field(
        default="{text}", description="User message; '{column}' placeholders are filled from the row."
    )
    instruction: str | None = Field(
        default=None,
        description="System message; '{schema}' is replaced by the schema's JSON. Default: "
        "engine.prompts.DEFAULT_EXTRACT_INSTRUCTION.",
    )
    max_tokens: int = Field(default=256, ge=1, description="Tokens per object at most; a longer one is an error row.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 (the default) is greedy: reproducible.")
    seed: int | None = Field(default=None, description="Per-row seed is seed + a hash of the row id.")
    enum_probabilities: bool = Field(
        default=True,
        description="Fill top-level string-enum and boolean fields by label scoring over their values (conditioned "
        "on the fields before them): adds <field>_probability and <field>_logprobs columns.",
    )

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    @field_validator("json_schema", mode="before")
    @classmethod
    def _load(cls, value: object) -> object:
        """A path to a .json file or JSON text (the CLI's `--schema`), else the object itself."""
        if isinstance(value, str):
            text = value
            if not value.lstrip().startswith("{"):
                try:
                    text = Path(value).read_text()
                except OSError as exc:
                    raise ValueError(f"cannot read the schema file {value!r}: {exc.strerror}") from None
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"the schema is not JSON: {exc}") from None
        return value

    @field_validator("json_schema")
    @classmethod
    def _usable(cls, schema: dict[str, Any]) -> dict[str, Any]:
        from phifleet.jobs.json_columns import property_fields

        names = [f.name for f in property_fields(schema)]
        extra = {f"{n}_{suffix}" for n in names for suffix in ("probability", "logprobs")}
        taken = sorted(set(names) & (EXTRACT_RESERVED | extra))
        if taken:
            raise ValueError(f"property {taken[0]!r} would collide with an output column of its own name")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        problem = schema_problem(schema)
        if problem:
            raise ValueError(f"cannot constrain decoding to it: {problem}")
        return schema


#: Output columns of an extract row besides the schema's fields (and their _probability/_logprobs columns).
EXTRACT_RESERVED = frozenset(
    {
        "id",
        "json",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "model",
        "source",
        "line",
        "error",
        "error_code",
    }
)


class BatchTask(_Strict):
    """OpenAI Batch API input (`custom_id`, `method`, `url`, `body` per line)."""

    kind: Literal["batch"] = "batch"
    limits: RequestLimits = Field(
        default_factory=RequestLimits, description="What one line's request may ask for: as the server's `limits`."
    )


Task = Annotated[LabelTask | GenerateTask | ExtractTask | BatchTask, Field(discriminator="kind")]


class JobConfig(_Strict):
    input: InputConfig
    output: OutputConfig
    task: Task
    engine: EngineConfig = Field(default_factory=EngineConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    address: str | None = Field(
        default=None, description="Ray address to join (else RAY_ADDRESS, else an embedded local Ray)."
    )

    @model_validator(mode="after")
    def _extract_needs_the_continuous_engine(self) -> JobConfig:
        if self.task.kind == "extract" and self.engine.batching == "static":
            raise ValueError("task.kind extract needs engine.batching continuous or auto (constrained decoding)")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> JobConfig:
        """YAML or JSON (JSON is YAML)."""
        data = yaml.safe_load(Path(path).read_text())
        return cls.model_validate(data)
