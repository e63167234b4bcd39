"""Label, generate, extract and OpenAI Batch on Ray Datasets: a Dataset in, a lazy Dataset out, one row per row.

The shape of ``ray.data.llm``'s ``build_llm_processor(config)(ds)``: three ``map_batches`` steps, each returning
the batch it was given with columns added, so every output row still carries its own input columns (no join back):

1. **prepare** (CPU tasks): per row, the kind's ``prepare(record, rid, validator)``: the prompt rendered and
   checked with the engine's own validator; any exception becomes that row's error.
2. **replica** (an actor pool, one ``Engine`` per actor): the kind's ``run`` on the good rows of a batch; if the
   batch fails, one row at a time, so a bad row fails alone.
3. **columns** (CPU tasks): each output expanded into typed columns, the internal columns dropped.

These are the file jobs' own stages (``phifleet.jobs.stages.build_stages``): the CLI and ``run_job`` differ only in
reading files (line ids, resume, duplicate ids) and committing shards instead of returning columns, so both give the
same answers for the same rows. Here there is no output folder: nothing is resumed, duplicate ids are not checked,
and the caller decides where rows go (``write_parquet``, ``iter_rows``, another ``map_batches``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict

from phifleet.engine.config import EngineConfig
from phifleet.engine.loading import resolve_model
from phifleet.jobs.config import (
    BatchTask,
    ExtractTask,
    GenerateTask,
    InputConfig,
    JobConfig,
    LabelTask,
    OutputConfig,
    PoolConfig,
)
from phifleet.jobs.errors import JobInputError
from phifleet.jobs.sources import expand_paths, format_of
from phifleet.jobs.stages import StageSpec, build_stages, output_schema
from phifleet.jobs.stages.prepare import NO_PATH
from phifleet.protocol.limits import RequestLimits

DatasetLike = ray.data.Dataset | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
ModelLike = EngineConfig | Mapping[str, Any] | str | os.PathLike[str] | None
PoolLike = PoolConfig | Mapping[str, Any] | None
KeepColumns = bool | Sequence[str]

READERS = {"jsonl": "read_json", "parquet": "read_parquet", "csv": "read_csv"}


class _Options(BaseModel):
    """The API's own arguments, validated like the job models (a ValidationError names the field)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    keep_columns: bool | list[str] | tuple[str, ...] = True


# --- the public functions ---------------------------------------------------------------------------------------


def label(
    ds: DatasetLike,
    labels: Sequence[str],
    *,
    text_column: str = "text",
    instruction: str | None = None,
    model: ModelLike = None,
    pool: PoolLike = None,
    keep_columns: KeepColumns = True,
) -> ray.data.Dataset:
    """Classify each row's ``text_column`` into one of ``labels`` (label scoring, no generation).

    Returns a lazy Dataset: the input columns (``keep_columns``) then ``label``, ``probability``, ``logprobs``
    (a struct with one float field per label, in ``labels`` order), ``prompt_tokens``, ``error``, ``error_code``.
    """
    task = LabelTask(labels=labels, instruction=instruction)  # type: ignore[arg-type]
    return _process(ds, task, model, pool, keep_columns, text_column=text_column)


def generate(
    ds: DatasetLike,
    prompt_template: str,
    *,
    system: str | None = None,
    max_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    stop: str | Sequence[str] = (),
    model: ModelLike = None,
    pool: PoolLike = None,
    keep_columns: KeepColumns = True,
) -> ray.data.Dataset:
    """Fill ``prompt_template`` (``{column}`` placeholders) from each row and generate a completion for it.

    With ``seed``, each row samples with ``seed`` + a hash of its row id (the ``id`` column, else a hash of the
    row's content), so a row gets the same completion in any batch, replica or run. Returns a lazy Dataset: the
    input columns then ``text``, ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, ``error``,
    ``error_code``.
    """
    task = GenerateTask(
        prompt_template=prompt_template,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=[stop] if isinstance(stop, str) else stop,  # type: ignore[arg-type]
    )
    return _process(ds, task, model, pool, keep_columns)


def extract(
    ds: DatasetLike,
    schema: Mapping[str, Any],
    *,
    prompt_template: str = "{text}",
    instruction: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    seed: int | None = None,
    enum_probabilities: bool = True,
    model: ModelLike = None,
    pool: PoolLike = None,
    keep_columns: KeepColumns = True,
) -> ray.data.Dataset:
    """Decode each row's object under the JSON ``schema`` (structured output) and return its fields as columns.

    Returns a lazy Dataset: the input columns, then one typed column per top-level property (jobs.json_columns),
    ``<field>_probability`` and ``<field>_logprobs`` for string-enum and boolean fields (label scoring), ``json``,
    ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, ``error``, ``error_code``.
    """
    task = ExtractTask(
        schema=dict(schema),
        prompt_template=prompt_template,
        instruction=instruction,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        enum_probabilities=enum_probabilities,
    )
    return _process(ds, task, model, pool, keep_columns)


def batch(
    ds: DatasetLike,
    *,
    model: ModelLike = None,
    pool: PoolLike = None,
    keep_columns: KeepColumns = True,
    limits: RequestLimits | Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    """Answer OpenAI Batch rows (``custom_id``, ``method``, ``url``, ``body``: a struct or a JSON string).

    ``limits`` bound what one row's request may ask for, as the server's. Returns a lazy Dataset: the input
    columns then ``response`` (the OpenAI response body as JSON: a completion, or the 400 error body of a request
    OpenAI would refuse), ``status_code`` (200, 400, or null where the row is no request at all),
    ``prompt_tokens``, ``completion_tokens``, ``error``, ``error_code``.
    """
    task = BatchTask() if limits is None else BatchTask(limits=limits)  # type: ignore[arg-type]
    return _process(ds, task, model, pool, keep_columns)


# --- planning (on the driver) -------------------------------------------------------------------------------------


def job_config(
    task: LabelTask | GenerateTask | ExtractTask | BatchTask,
    model: ModelLike,
    pool: PoolLike,
    text_column: str = "text",
) -> JobConfig:
    """The file jobs' config for an API call, validated by the same models (input and output are placeholders)."""
    return JobConfig(
        input=InputConfig(path=NO_PATH, text_column=text_column),
        output=OutputConfig(path=NO_PATH),
        task=task,
        engine=engine_config(model),
        pool=PoolConfig.model_validate(pool if pool is not None else {}),
    )


def engine_config(model: ModelLike) -> EngineConfig:
    """None: the shipped tiny model; a string or path: a model directory, hub id or 'phi4-tiny'; else the fields."""
    if model is None:
        return EngineConfig()
    if isinstance(model, str | os.PathLike):
        return EngineConfig(model=os.fspath(model))
    return EngineConfig.model_validate(model)


def _process(
    ds: DatasetLike,
    task: LabelTask | GenerateTask | ExtractTask | BatchTask,
    model: ModelLike,
    pool: PoolLike,
    keep_columns: KeepColumns,
    text_column: str = "text",
) -> ray.data.Dataset:
    """Validate everything, find the input, resolve the model once, then chain the three lazy steps."""
    keep = _keep(_Options(keep_columns=keep_columns).keep_columns)  # type: ignore[arg-type]
    config = job_config(task, model, pool, text_column)
    source = _source(ds)
    resolved = resolve_model(config.engine)
    spec = StageSpec(config.model_dump_json(), str(resolved.path), resolved.context_window, resolved.served_name)
    data = source if isinstance(source, ray.data.Dataset) else _read(*source)
    if keep:
        schema = data.schema(fetch_if_missing=False)  # only when known without running anything
        missing = [c for c in keep if schema is not None and c not in schema.names]
        if missing:
            raise ValueError(f"keep_columns names columns the input does not have: {missing} (it has {schema.names})")
    return build_steps(spec, keep)(data)


def build_steps(spec: StageSpec, keep: tuple[str, ...] | None) -> Callable[[ray.data.Dataset], ray.data.Dataset]:
    """``ds -> ds``: the file jobs' stages on a Dataset's rows (prepare -> replica -> columns); nothing runs yet."""
    stages = build_stages(spec, "dataset", keep)

    def steps(ds: ray.data.Dataset) -> ray.data.Dataset:
        for stage in stages:
            ds = stage.apply(ds, {})
        return ds

    return steps


def _keep(keep_columns: bool | Sequence[str]) -> tuple[str, ...] | None:
    """None: every input column; otherwise the ones named (none for False)."""
    if keep_columns is True:
        return None
    if keep_columns is False:
        return ()
    return tuple(dict.fromkeys(keep_columns))


def _source(ds: DatasetLike) -> ray.data.Dataset | tuple[str, list[str]]:
    """The Dataset itself, or (format, file URLs) for paths: files, directories, globs, fsspec URLs."""
    if isinstance(ds, ray.data.Dataset):
        return ds
    if isinstance(ds, str | os.PathLike):
        paths = [ds]
    elif isinstance(ds, Sequence) and ds and all(isinstance(p, str | os.PathLike) for p in ds):
        paths = list(ds)
    else:
        raise TypeError(f"ds must be a ray.data.Dataset, a path or a list of paths, got {type(ds).__name__}")
    urls = sorted({url for p in paths for url in expand_paths(os.fspath(p))})
    formats = sorted({format_of(url, "auto") for url in urls})
    if len(formats) > 1:
        raise JobInputError(f"the input mixes formats {formats}: pass files of one format, or a ray.data.Dataset")
    return formats[0], urls


def _read(fmt: str, urls: list[str]) -> ray.data.Dataset:
    return getattr(ray.data, READERS[fmt])(urls, file_extensions=None)


__all__ = ["batch", "build_steps", "engine_config", "extract", "generate", "job_config", "label", "output_schema"]
