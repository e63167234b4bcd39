"""Label jobs: classify each row's text into one of the task's labels by label scoring (no generation)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from phifleet.engine.prompts import classification_prompt
from phifleet.engine.types import Prompt
from phifleet.engine.validation import RequestValidator
from phifleet.jobs.config import JobConfig, LabelTask
from phifleet.jobs.kinds.base import JobKind, Tally
from phifleet.jobs.rows import Prepared, text_field

if TYPE_CHECKING:
    from phifleet.engine.engine import Engine  # only a type here: the CPU stages never load the engine


class LabelKind(JobKind[LabelTask]):
    kind = "label"

    def __init__(self, config: JobConfig, model_name: str) -> None:
        super().__init__(config, model_name)
        self._label_ids: list[list[int]] | None = None  # tokenized once, by the first row's validator

    def prepare(self, record: dict[str, Any], rid: str | None, validator: RequestValidator) -> Prepared:
        text = text_field(record, self.config.input.text_column)
        prompt = classification_prompt(text, self.task.labels, self.task.instruction)
        if self._label_ids is None:
            self._label_ids = validator.label_ids(self.task.labels)
        validator.label_prompt_ids(prompt, self._label_ids)  # room for the longest label, as the engine checks
        return Prepared(str(rid), prompt.to_json())

    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any]]:
        scores = engine.score_labels([Prompt.from_json(r.prompt) for r in rows], self.task.labels)
        return [
            {
                "label": s.label,
                "probability": s.probabilities[s.label],
                "logprobs": s.logprobs,
                "prompt_tokens": s.prompt_tokens,
            }
            for s in scores
        ]

    def result_row(self, rid: str, output: dict[str, Any], source: str, line: int) -> dict[str, Any]:
        row = super().result_row(rid, output, source, line)
        row["logprobs"] = {label: output["logprobs"][label] for label in self.task.labels}  # same struct every shard
        return row

    def tally(self, output: dict[str, Any]) -> Tally:
        return Tally(output["prompt_tokens"], 0, output["label"])

    def finish(self, manifest: dict[str, Any], labels: Counter[str]) -> None:
        manifest["labels"] = {label: labels[label] for label in self.task.labels}
