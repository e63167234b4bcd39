"""OpenAI Batch jobs: ``{custom_id, method, url, body}`` lines in; OpenAI Batch output and error lines out."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from phifleet.engine.validation import RequestValidator
from phifleet.jobs.config import BatchTask
from phifleet.jobs.kinds.base import JobKind, Tally
from phifleet.jobs.rows import Prepared, RowError, valid_id
from phifleet.jobs.sinks import ERRORS_DIR, RESULTS_DIR, merge_jsonl
from phifleet.protocol.batch import BatchLine
from phifleet.protocol.errors import OpenAIError
from phifleet.protocol.requests import parse_request

if TYPE_CHECKING:
    from phifleet.engine.engine import Engine  # only a type here: the CPU stages never load the engine

OUTPUT_FILE, ERROR_FILE = "output.jsonl", "errors.jsonl"


class BatchKind(JobKind[BatchTask]):
    kind = "batch"

    @property
    def output_format(self) -> str:
        return "jsonl"  # the shards are concatenated into OpenAI's output file

    def row_id(self, record: dict[str, Any], path: str, line: int) -> str | None:
        """``custom_id`` as it is: a batch line must name itself (no generated ids). A missing or non-string one is
        None (``prepare`` refuses it); an empty or whitespace-only one is refused here, as an empty id column is."""
        custom_id = record.get("custom_id")
        if not isinstance(custom_id, str):
            return None
        if not custom_id.strip():
            raise RowError("custom_id must be a non-empty string", code="missing_custom_id", param="custom_id")
        return valid_id(custom_id, "custom_id")

    def prepare(self, record: dict[str, Any], rid: str | None, validator: RequestValidator) -> Prepared:
        if not rid:
            raise RowError("custom_id must be a non-empty string", code="missing_custom_id", param="custom_id")
        if record.get("method", "POST") != "POST":
            raise RowError("method must be POST", param="method")
        try:
            request = parse_request(str(record.get("url")), record.get("body"), limits=self.task.limits)
        except OpenAIError as exc:
            raise RowError(exc.message, param=exc.param) from exc
        for generation in request.generation_requests():
            validator.generation(generation)
        body = json.dumps({"url": record.get("url"), "body": record.get("body")})
        return Prepared(rid, request.prompt_text(), body)

    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any]]:
        parsed = [parse_request(**json.loads(r.request), limits=self.task.limits) for r in rows]
        per_row = [p.generation_requests() for p in parsed]
        flat = engine.generate([g for requests in per_row for g in requests])
        out, i = [], 0
        for request, generations in zip(parsed, per_row, strict=True):
            results = flat[i : i + len(generations)]
            i += len(generations)
            response = request.response(results, engine.model_name)
            out.append({"body": response.model_dump(), "usage": response.usage.model_dump()})
        return out

    def result_row(self, rid: str, output: dict[str, Any], source: str, line: int) -> dict[str, Any]:
        return BatchLine.ok(rid, line, output["body"]).model_dump()

    def error_row(self, rid: str | None, error: RowError, source: str, line: int, raw: str) -> dict[str, Any]:
        return BatchLine.failed(rid, line, f"line {line}: {error}", error.code, error.param).model_dump()

    def tally(self, output: dict[str, Any]) -> Tally:
        return Tally(output["usage"]["prompt_tokens"], output["usage"]["completion_tokens"])

    def finish(self, manifest: dict[str, Any], labels: Counter[str]) -> None:
        path = self.config.output.path
        merge_jsonl(path, RESULTS_DIR, OUTPUT_FILE)
        merge_jsonl(path, ERRORS_DIR, ERROR_FILE)
        manifest["outputs"].update({"output_file": OUTPUT_FILE, "error_file": ERROR_FILE})
