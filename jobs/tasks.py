"""What each job kind does to one row: build its prompt (CPU stage), run it (replica stage), shape its output.

A handler never raises for a bad row: it returns an error string, and the row goes to `errors`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from phifleet.engine import Engine, GenerationRequest, SamplingParams
from phifleet.engine.chat_template import render_chat
from phifleet.engine.errors import EngineError
from phifleet.engine.openai_api import error_body, generation_requests, parse_request, response_body
from phifleet.engine.prompts import classification_prompt
from phifleet.jobs.config import GenerateTask, LabelTask


@dataclass(frozen=True)
class Prepared:
    """A row ready for a replica: its id, the rendered prompt and the tokens the answer may need."""

    id: str
    prompt: str
    reserve_tokens: int
    request: str = ""  # task-specific JSON the replica needs (an OpenAI body)


class RowError(ValueError):
    """A row-level problem; ``code`` is reported in OpenAI Batch error lines."""

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


def row_id(record: dict[str, Any], id_column: str | None, source: str, line: int) -> str:
    if id_column and id_column in record and record[id_column] is not None:
        value = record[id_column]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RowError(f"column '{id_column}' must be a string or an integer", param=id_column)
        return str(value)
    return f"{source.rsplit('/', 1)[-1]}:{line}"


def row_seed(base: int, rid: str) -> int:
    """A per-row seed that does not depend on which batch or replica the row lands in."""
    return base + int.from_bytes(hashlib.sha256(rid.encode()).digest()[:4], "big")


class LabelHandler:
    def __init__(self, task: LabelTask, text_column: str, label_tokens: int) -> None:
        self.task, self.text_column, self.label_tokens = task, text_column, label_tokens

    def prepare(self, record: dict[str, Any], rid: str) -> Prepared:
        text = _text(record, self.text_column)
        return Prepared(rid, classification_prompt(text, self.task.labels, self.task.instruction), self.label_tokens)

    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any]]:
        scores = engine.score_labels([r.prompt for r in rows], self.task.labels)
        return [
            {
                "label": s.label,
                "probability": s.probabilities[s.label],
                "logprobs": s.logprobs,
                "prompt_tokens": s.prompt_tokens,
            }
            for s in scores
        ]


class GenerateHandler:
    def __init__(self, task: GenerateTask, text_column: str) -> None:
        self.task, self.text_column = task, text_column

    def prepare(self, record: dict[str, Any], rid: str) -> Prepared:
        try:
            user = self.task.prompt_template.format_map(record)
        except KeyError as exc:
            raise RowError(
                f"prompt_template needs column {exc.args[0]!r}, missing in this row", param=exc.args[0]
            ) from None
        except (ValueError, IndexError) as exc:
            raise RowError(f"prompt_template cannot be filled from this row: {exc}") from exc
        messages = ([{"role": "system", "content": self.task.system}] if self.task.system else []) + [
            {"role": "user", "content": user}
        ]
        return Prepared(rid, render_chat(messages), self.task.max_tokens)

    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any]]:
        t = self.task
        requests = [
            GenerationRequest(
                r.prompt,
                SamplingParams(
                    max_tokens=t.max_tokens,
                    temperature=t.temperature,
                    top_p=t.top_p,
                    top_k=t.top_k,
                    seed=None if t.seed is None else row_seed(t.seed, r.id),
                    stop=tuple(t.stop),
                ),
            )
            for r in rows
        ]
        return [
            {
                "text": res.text,
                "finish_reason": res.finish_reason,
                "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens,
            }
            for res in engine.generate(requests)
        ]


class BatchHandler:
    """OpenAI Batch API lines: {custom_id, method, url, body} in, {id, custom_id, response, error} out."""

    def prepare(self, record: dict[str, Any], rid: str) -> Prepared:
        custom_id = record.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise RowError("custom_id must be a non-empty string", code="missing_custom_id", param="custom_id")
        if record.get("method", "POST") != "POST":
            raise RowError("method must be POST", param="method")
        try:
            request = parse_request(str(record.get("url")), record.get("body"))
        except EngineError as exc:
            raise RowError(exc.message, param=exc.param) from exc
        reserve = request.sampling().max_tokens
        body = json.dumps({"url": record.get("url"), "body": record.get("body")})
        return Prepared(custom_id, _prompt_of(request), reserve, body)

    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any]]:
        parsed = [parse_request(**json.loads(r.request)) for r in rows]
        per_row = [generation_requests(p) for p in parsed]
        flat = engine.generate([g for reqs in per_row for g in reqs])
        out, i = [], 0
        for p, reqs in zip(parsed, per_row, strict=True):
            results = flat[i : i + len(reqs)]
            i += len(reqs)
            out.append({"body": response_body(p, results, engine.model_name), "usage_tokens": _usage(results)})
        return out


def _prompt_of(request) -> str:
    return request.prompt() if hasattr(request, "messages") else request.prompt


def _usage(results) -> tuple[int, int]:
    return results[0].prompt_tokens, sum(r.completion_tokens for r in results)


def _text(record: dict[str, Any], column: str) -> str:
    if column not in record:
        raise RowError(f"missing text column '{column}'", param=column)
    text = record[column]
    if not isinstance(text, str):
        raise RowError(f"column '{column}' must be a string, got {type(text).__name__}", param=column)
    if not text.strip():
        raise RowError(f"column '{column}' is empty", param=column)
    return text


def batch_error_line(custom_id: str | None, message: str, code: str, param: str | None, line: int) -> dict[str, Any]:
    """An OpenAI Batch error-file line: a 400 response for a bad request, else a top-level error."""
    rid = f"batch_req_{hashlib.sha1(f'{custom_id}:{line}'.encode()).hexdigest()[:24]}"
    if custom_id is not None and code == "invalid_request":
        return {
            "id": rid,
            "custom_id": custom_id,
            "response": {"status_code": 400, "request_id": rid, "body": error_body(message, param, code)},
            "error": None,
        }
    return {
        "id": rid,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message, "param": param, "line": line},
    }
