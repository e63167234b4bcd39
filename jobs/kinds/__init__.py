"""The job kinds, keyed by the task's ``kind``: each one file, each owning everything kind-specific."""

from __future__ import annotations

from phifleet.jobs.config import JobConfig
from phifleet.jobs.kinds.base import JobKind, Tally
from phifleet.jobs.kinds.batch import BatchKind
from phifleet.jobs.kinds.extract import ExtractKind
from phifleet.jobs.kinds.generate import GenerateKind
from phifleet.jobs.kinds.label import LabelKind

KINDS: dict[str, type[JobKind]] = {k.kind: k for k in (LabelKind, GenerateKind, ExtractKind, BatchKind)}


def job_kind(config: JobConfig, model_name: str) -> JobKind:
    """The handler for ``config.task``."""
    return KINDS[config.task.kind](config, model_name)


__all__ = ["KINDS", "BatchKind", "ExtractKind", "GenerateKind", "JobKind", "LabelKind", "Tally", "job_kind"]
