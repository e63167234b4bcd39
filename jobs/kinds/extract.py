"""Extract jobs: one JSON object per row, decoded under the task's JSON schema, written as typed columns.

Each row's object is generated with the schema as its grammar (engine.structured_output), so it parses; it is
validated against the schema all the same, and an object cut by ``max_tokens`` or one that does not validate is
that row's error, never a result. With ``enum_probabilities``, each top-level string-enum or boolean field is then
filled by label scoring: the log-probability of every allowed value right after the object's text up to that
field (so conditioned on the fields before it), the likeliest value written, and ``<field>_probability`` (its
share of the values' probability mass) and ``<field>_logprobs`` (every value's) beside it. The fields after it
were generated after the generated value; when scoring picks another (rare: the grammar's greedy choice is token by
token, scoring is over whole values), ``json`` is the object as written, scored values in, validated again.
Every field of every row in a block is scored in one engine call (``score_continuations_each``: many prompts to
a forward pass), not one pass per field per row: each field is conditioned on generated text only, never on
another field's score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema
import pyarrow as pa

from phifleet.engine.chat_template import render_chat_prompt
from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.prompts import DEFAULT_EXTRACT_INSTRUCTION
from phifleet.engine.types import (
    GenerationRequest,
    GenerationResult,
    Prompt,
    ResponseFormat,
    SamplingParams,
    probabilities,
)
from phifleet.engine.validation import RequestValidator
from phifleet.jobs.config import ExtractTask
from phifleet.jobs.json_columns import arrow_value, choices, property_fields
from phifleet.jobs.kinds.base import JobKind
from phifleet.jobs.kinds.generate import fill_template
from phifleet.jobs.rows import Prepared, RowError, row_seed

if TYPE_CHECKING:
    from phifleet.engine.engine import Engine  # only a type here: the CPU stages never load the engine
    from phifleet.engine.sequence import Sequence as Seq


class ExtractShape:
    """An extract task's output columns, and one answer flattened into them (file shards and the Python API)."""

    def __init__(self, task: ExtractTask) -> None:
        self.task = task
        self.fields = property_fields(task.json_schema)
        props = task.json_schema["properties"]
        found = {f.name: choices(props[f.name]) for f in self.fields} if task.enum_probabilities else {}
        self.choices = {name: values for name, values in found.items() if values}

    def output_fields(self) -> list[pa.Field]:
        out = list(self.fields)
        for name, values in self.choices.items():
            out.append(pa.field(f"{name}_probability", pa.float64()))
            out.append(pa.field(f"{name}_logprobs", pa.struct([(_key(v), pa.float64()) for v in values])))
        out += [
            pa.field("json", pa.string()),
            pa.field("finish_reason", pa.string()),
            pa.field("prompt_tokens", pa.int64()),
            pa.field("completion_tokens", pa.int64()),
        ]
        return out

    def flatten(self, output: dict[str, Any]) -> dict[str, Any]:
        obj = output["object"]
        row = {f.name: arrow_value(obj.get(f.name), f.type) for f in self.fields}
        for name in self.choices:  # an optional field the object left out has no probabilities (null)
            row[f"{name}_probability"] = output["probability"].get(name)
            row[f"{name}_logprobs"] = output["logprobs"].get(name)
        row["json"] = json.dumps(obj, ensure_ascii=False, allow_nan=False)
        row.update({k: output[k] for k in ("finish_reason", "prompt_tokens", "completion_tokens")})
        return row


def _key(value: Any) -> str:
    """A value's name as a struct field and a dict key: the string itself, or JSON's ``true``/``false``."""
    return value if isinstance(value, str) else json.dumps(value)


def field_value_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character span of each top-level property's value in the JSON object ``text``."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    i = text.index("{") + 1
    while True:
        while text[i].isspace():
            i += 1
        if text[i] == "}":
            return spans
        key, i = decoder.raw_decode(text, i)
        while text[i].isspace() or text[i] == ":":
            i += 1
        start = i
        _, i = decoder.raw_decode(text, i)
        spans[key] = (start, i)
        while text[i].isspace() or text[i] == ",":
            i += 1


@dataclass
class _Draft:
    """A generated row's object, checked, waiting for its enum/boolean fields' scores (one request per field)."""

    result: GenerationResult
    obj: dict[str, Any]
    fields: list[str]  # the fields to score, in the schema's order
    requests: list[tuple[list[int], list[list[int]]]]  # (prompt ids, options) per field


def _row_scores(fields: list[str], scores: list[list[float] | Exception]) -> list[list[float]] | Exception:
    """A row's field scores, or the first field's error: a field that cannot be scored fails its row (named by
    the field: the engine's own ``param`` indexes a flat list of the block's fields, meaningless in a row)."""
    rows: list[list[float]] = []
    for name, s in zip(fields, scores, strict=True):
        if isinstance(s, InvalidRequestError):
            return RowError(f"field {name!r} could not be scored: {s.message}", param=name)
        if isinstance(s, Exception):
            return s
        rows.append(s)
    return rows


class ExtractKind(JobKind[ExtractTask]):
    kind = "extract"

    def __init__(self, config: Any, model_name: str) -> None:
        super().__init__(config, model_name)
        self.shape = ExtractShape(self.task)
        self.validator = jsonschema.validators.validator_for(self.task.json_schema)(self.task.json_schema)
        self.schema_text = json.dumps(self.task.json_schema, ensure_ascii=False)
        self.format = ResponseFormat(type="json_schema", schema_text=self.schema_text, strict=True, name="extract")
        self.arrow = pa.schema(
            [
                pa.field("id", pa.string()),
                *self.shape.output_fields(),
                pa.field("model", pa.string()),
                pa.field("source", pa.string()),
                pa.field("line", pa.int64()),
            ]
        )

    def prompt(self, record: dict[str, Any]) -> Prompt:
        """The schema in the system message (the model must know what the fields mean), the row as the user's."""
        system = (self.task.instruction or DEFAULT_EXTRACT_INSTRUCTION).replace("{schema}", self.schema_text)
        user = fill_template(self.task.prompt_template, record)
        return render_chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": user}])

    def request(self, prompt: Prompt, rid: str) -> GenerationRequest:
        t = self.task
        params = SamplingParams(
            max_tokens=t.max_tokens,
            temperature=t.temperature,
            seed=None if t.seed is None else row_seed(t.seed, rid),
            response_format=self.format,
        )
        return GenerationRequest(prompt, params)

    def prepare(self, record: dict[str, Any], rid: str | None, validator: RequestValidator) -> Prepared:
        prompt = self.prompt(record)
        validator.generation(self.request(prompt, str(rid)))
        return Prepared(str(rid), prompt.to_json())

    def run(self, engine: Engine, rows: list[Prepared]) -> list[dict[str, Any] | Exception]:  # type: ignore[override]
        seqs: list[Seq | Exception] = []
        for row in rows:
            try:
                seqs.append(engine.prepare(self.request(Prompt.from_json(row.prompt), row.id)))
            except Exception as exc:
                seqs.append(exc)
        live = [s for s in seqs if not isinstance(s, Exception)]
        results = iter(engine.generate_each(live))
        drafts: list[_Draft | Exception] = []
        for seq in seqs:
            if isinstance(seq, Exception):
                drafts.append(seq)
                continue
            result = next(results)
            try:
                if isinstance(result, Exception):
                    raise result
                drafts.append(self._draft(engine, seq, result))
            except Exception as exc:  # this row's error; the block goes on
                drafts.append(exc)
        return self._finish_all(engine, drafts)

    def _answer(self, engine: Engine, seq: Seq, result: GenerationResult) -> dict[str, Any]:
        """One row's output: what ``run`` does for every row of a block at once."""
        (output,) = self._finish_all(engine, [self._draft(engine, seq, result)])
        if isinstance(output, Exception):
            raise output
        return output

    def _draft(self, engine: Engine, seq: Seq, result: GenerationResult) -> _Draft:
        """The row's object, checked, and the scoring request of each enum/boolean field in it."""
        if result.finish_reason != "stop":
            raise RowError(
                f"the object was not finished within max_tokens ({self.task.max_tokens} tokens): raise max_tokens",
                code="incomplete_output",
                param="max_tokens",
            )
        try:
            parsed = json.loads(result.text)
        except ValueError:
            parsed = None
        obj = self._valid(parsed if isinstance(parsed, dict) else None, result.text)
        fields = [name for name in self.shape.choices if name in obj]  # an optional field left out is not scored
        requests: list[tuple[list[int], list[list[int]]]] = []
        if fields:
            spans = field_value_spans(result.text)
            ids = list(result.token_ids)
            # where each generated token ends in the text, as the detokenizer wrote it (control tokens dropped)
            offsets = [len(engine.tokenizer.decode(ids[:k], skip_special_tokens=True)) for k in range(len(ids) + 1)]
            for name in fields:
                values = self.shape.choices[name]
                requests.append(self._continuations(engine, seq, result.text, ids, offsets, spans[name], values))
        return _Draft(result, obj, fields, requests)

    def _finish_all(self, engine: Engine, drafts: list[_Draft | Exception]) -> list[dict[str, Any] | Exception]:
        """Every draft's fields scored in one call, then each row's output or its own error."""
        out: list[dict[str, Any] | Exception] = []
        for draft, scores in zip(drafts, self._score_all(engine, drafts), strict=True):
            if isinstance(draft, Exception) or isinstance(scores, Exception):
                out.append(draft if isinstance(draft, Exception) else scores)
                continue
            try:
                out.append(self._finish(draft, scores))
            except Exception as exc:
                out.append(exc)
        return out

    def _score_all(self, engine: Engine, drafts: list[_Draft | Exception]) -> list[list[list[float]] | Exception]:
        """Each draft's field scores (or the exception that failed the row). All fields of all rows go in one call:
        each is conditioned on the generated text before it, not on another field's score, so none waits for
        another. If the call fails as a whole, the rows are scored apart, so only the rows that fail it fail."""
        items = [request for d in drafts if isinstance(d, _Draft) for request in d.requests]
        try:
            scored = iter(engine.score_continuations_each(items) if items else [])
        except Exception:
            return [self._score_alone(engine, d) for d in drafts]
        return [
            d if isinstance(d, Exception) else _row_scores(d.fields, [next(scored) for _ in d.requests]) for d in drafts
        ]

    def _score_alone(self, engine: Engine, draft: _Draft | Exception) -> list[list[float]] | Exception:
        if isinstance(draft, Exception):
            return draft
        if not draft.requests:
            return []
        try:
            return _row_scores(draft.fields, engine.score_continuations_each(draft.requests))
        except Exception as exc:
            return exc

    def _finish(self, draft: _Draft, scores: list[list[float]]) -> dict[str, Any]:
        """The scored values filled in (the likeliest as a whole, not token by token), checked, as the output."""
        obj, result = draft.obj, draft.result
        probability: dict[str, float] = {}
        logprobs: dict[str, dict[str, float]] = {}
        for name, row in zip(draft.fields, scores, strict=True):
            values = self.shape.choices[name]
            logprobs[name] = {_key(v): s for v, s in zip(values, row, strict=True)}
            shares = probabilities(logprobs[name])
            best = max(range(len(values)), key=row.__getitem__)
            obj[name] = values[best]
            probability[name] = shares[_key(values[best])]
        if draft.fields:
            obj = self._valid(obj, result.text)  # a scored value stays inside the schema
        output = {
            "object": obj,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "probability": probability,
            "logprobs": logprobs,
        }
        try:  # a value Arrow cannot hold (an integer beyond int64) is this row's error, not the shard's
            pa.Table.from_pylist([self.shape.flatten(output)], schema=pa.schema(self.shape.output_fields()))
        except (pa.ArrowException, OverflowError, ValueError, TypeError) as exc:
            raise RowError(f"a value does not fit its column: {exc}", code="invalid_output") from None
        return output

    def _valid(self, obj: Any, text: str) -> Any:
        error = next(iter(self.validator.iter_errors(obj)), None) if obj is not None else None
        if obj is None or error is not None:
            reason = error.message if error is not None else f"not a JSON object: {text[:200]!r}"
            raise RowError(f"the output does not validate against the schema: {reason}", code="invalid_output")
        return obj

    def _continuations(
        self,
        engine: Engine,
        seq: Seq,
        text: str,
        ids: list[int],
        offsets: list[int],
        span: tuple[int, int],
        values: list[Any],
    ) -> tuple[list[int], list[list[int]]]:
        """The prompt and the options to score one field's values by: each value as the model would write it, from
        the last token boundary before the value to the first one after it, so the text around the value (a space,
        the closing quote merged with a comma) is tokenized as in the generated object; the prompt is the row's and
        the object's tokens before that boundary."""
        start, end = span
        cut = max(k for k, o in enumerate(offsets) if o <= start)
        after = min((o for o in offsets if o >= end), default=len(text))
        lead, tail = text[offsets[cut] : start], text[end:after]
        options = [engine.encode(lead + json.dumps(v, ensure_ascii=False) + tail) for v in values]
        return seq.prompt_ids + ids[:cut], options

    def result_row(self, rid: str, output: dict[str, Any], source: str, line: int) -> dict[str, Any]:
        return {"id": rid, **self.shape.flatten(output), "model": self.model_name, "source": source, "line": line}

    def result_schema(self) -> pa.Schema:
        return self.arrow
