"""Generate jobs: fill the task's prompt template from each row and generate a completion for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phifleet.engine.chat_template import render_chat_prompt
from phifleet.engine.types import GenerationRequest, Prompt, SamplingParams
from phifleet.engine.validation import RequestValidator
from phifleet.jobs.config import GenerateTask
from phifleet.jobs.kinds.base import JobKind
from phifleet.jobs.rows import Prepared, RowError, row_seed

if TYPE_CHECKING:
    from phifleet.engine.engine import Engine  # only a type here: the CPU stages never load the engine


def fill_template(template: str, record: dict[str, Any]) -> str:
    """``template`` with '{column}' placeholders filled from the row; a missing column is the row's error."""
    try:
        return template.format_map(record)
    except KeyError as exc:
        raise RowError(
            f"prompt_template needs column {exc.args[0]!r}, missing in this row", param=exc.args[0]
        ) from None
    except (ValueError, IndexError) as exc:
        raise RowError(f"prompt_template cannot be filled from this row: {exc}") from exc


class GenerateKind(JobKind[GenerateTask]):
    kind = "generate"

    def prompt(self, record: dict[str, Any]) -> Prompt:
        """The chat prompt: the optional system message, then the template filled from the row's columns (as text:
        a row cannot write control tokens)."""
        user = fill_template(self.task.prompt_template, record)
        system = [{"role": "system", "content": self.task.system}] if self.task.system else []
        return render_chat_prompt([*system, {"role": "user", "content": user}])

    def request(self, prompt: Prompt, rid: str) -> GenerationRequest:
        """The engine request for a row; seeded per row id, so a row samples the same in any batch or replica."""
        t = self.task
        params = SamplingParams(
            max_tokens=t.max_tokens,
            temperature=t.temperature,
            top_p=t.top_p,
            top_k=t.top_k,
            seed=None if t.seed is None else row_seed(t.seed, rid),
            stop=tuple(t.stop),
        )
        return GenerationRequest(prompt, params)

    def prepare(self, record: dict[str, Any], rid: str | None, validator: RequestValidator) -> Prepared:
        prompt = self.prompt(record)
        validator.generation(self.request(prompt, str(rid)))
        return Prepared(str(rid), prompt.to_json())

    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any]]:
        return [
            {
                "text": res.text,
                "finish_reason": res.finish_reason,
                "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens,
            }
            for res in engine.generate([self.request(Prompt.from_json(r.prompt), r.id) for r in rows])
        ]
