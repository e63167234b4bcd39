"""Structured output: generation constrained to a JSON schema (or to any JSON object) with xgrammar.

A ``ResponseFormat`` is compiled once per (kind, schema, strict) against the model's tokenizer and cached; each
request gets its own ``GrammarMatcher`` (a pushdown automaton's state). Every step, the loop asks the matchers of
the rows that have one for a bitmask of the tokens the grammar allows next and masks those rows' logits on the
device before sampling, so greedy and sampled decoding alike stay inside the grammar, and rows without a grammar
share the batch untouched. A completion that runs out of ``max_tokens`` before the object closes ends with
``finish_reason: "length"``: never presented as a valid object.

Why xgrammar (0.2.8): the grammar engine of vLLM, SGLang and TensorRT-LLM; it runs on CPU (bitmask filling is
host-side C++, and so is applying a mask on CPU; a CUDA/Triton kernel on GPUs), takes a Hugging Face tokenizer
as it is, and its wheels need nothing beyond the pinned torch and transformers (it pulls apache-tvm-ffi, and
Triton on Linux x86).
"""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xgrammar as xgr
from transformers import PreTrainedTokenizerBase

from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.types import ResponseFormat

if TYPE_CHECKING:
    from phifleet.engine.sequence import Sequence

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CPP_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:[0-9]+: ")
#: Compiled grammars kept per engine (schemas of one job or endpoint repeat: compile once, reuse).
CACHE_LIMIT_BYTES = 256 << 20


class GrammarCompiler:
    """Compiles response formats for one tokenizer; thread-safe (a server prepares requests off the loop)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_ids: frozenset[int]) -> None:
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids) or None
        )
        # Control tokens (<|im_start|>, Phi-4's <|dummy_N|>...) spell nothing the grammar can check, and the
        # detokenizer drops them: inside a constrained object they are never allowed (stop tokens end it).
        specials = set(tokenizer.all_special_ids)
        specials |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
        self.banned = sorted(i for i in specials - stop_ids if i < vocab_size)
        self._keep: dict[int, torch.Tensor | None] = {}
        self._bitmasks: dict[tuple[int, int], torch.Tensor] = {}
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_limit_bytes=CACHE_LIMIT_BYTES)
        self._lock = threading.Lock()

    def compile(self, fmt: ResponseFormat) -> xgr.CompiledGrammar:
        """The compiled grammar, or InvalidRequestError naming ``response_format`` (a schema xgrammar refuses).

        ``json_object`` is the schema ``{"type": "object"}``, compact: xgrammar's built-in JSON grammar would also
        take a top-level array and unbounded whitespace, on which a model could spend all of max_tokens."""
        schema = '{"type":"object"}' if fmt.type == "json_object" else fmt.schema_text
        try:
            with self._lock:
                return self._compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=fmt.strict)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError with the reason
            raise InvalidRequestError(
                f"response_format.json_schema.schema cannot be used for constrained decoding: {_reason(exc)}",
                param="response_format",
            ) from exc

    def matcher(self, fmt: ResponseFormat) -> Grammar:
        return Grammar(xgr.GrammarMatcher(self.compile(fmt)), self)

    # --- per step, on the loop's thread (one loop per engine, one compiler per engine) --------------------------
    def bitmask(self, rows: int, vocab: int) -> torch.Tensor:
        """The host bitmask for a step of ``rows`` rows, reused step after step."""
        key = (rows, vocab)
        if key not in self._bitmasks:
            self._bitmasks[key] = xgr.allocate_token_bitmask(rows, vocab)
        return self._bitmasks[key]

    def keep_words(self, words: int) -> torch.Tensor | None:
        """int32 words with every bit set but the control tokens' (None: none to clear), ANDed into bitmask rows."""
        if words not in self._keep:
            bits = np.ones(words * 32, dtype=bool)
            bits[[i for i in self.banned if i < words * 32]] = False
            packed = torch.from_numpy(np.packbits(bits, bitorder="little").view(np.int32).copy())
            self._keep[words] = packed if self.banned else None
        return self._keep[words]


class Grammar:
    """One request's position in its grammar: which tokens may come next, and whether the object is closed."""

    def __init__(self, matcher: xgr.GrammarMatcher, compiler: GrammarCompiler) -> None:
        self.matcher = matcher
        self.compiler = compiler

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token_id: int) -> None:
        """Advance past a sampled token; a token the mask allowed is always accepted."""
        if not self.matcher.accept_token(token_id):
            raise RuntimeError(f"token {token_id} was sampled outside the response_format grammar")

    @property
    def terminated(self) -> bool:
        """The object is complete and its stop token accepted."""
        return self.matcher.is_terminated()

    @property
    def complete(self) -> bool:
        """The text so far is a whole object (a stop token would be accepted now)."""
        return self.matcher.is_completed()


def _reason(exc: Exception) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return _CPP_PREFIX.sub("", lines[0])[:300]  # "[08:38:04] /project/cpp/x.cc:4944: " is no news to a client


def schema_problem(schema: dict[str, Any], strict: bool = False) -> str | None:
    """Why xgrammar cannot constrain decoding to ``schema`` (None: it can); needs no tokenizer (config checks)."""
    try:
        xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=strict)
    except Exception as exc:
        return _reason(exc)
    return None


def mask_logits(logits: torch.Tensor, rows: list[tuple[int, Sequence]]) -> torch.Tensor:
    """``logits`` with every row whose sequence has a grammar masked to the tokens it allows (a copy; rows without
    one untouched). One bitmask for the step, filled on the host (control tokens' bits cleared in the same words),
    applied on the logits' device. A grammar that cannot fill its row fails that sequence alone (its row stays
    unmasked; its token is discarded)."""
    grammars = [(i, seq) for i, seq in rows if seq.grammar is not None and not seq.finished]
    if not grammars:
        return logits
    vocab = logits.shape[-1]
    compiler = grammars[0][1].grammar.compiler
    bitmask = compiler.bitmask(logits.shape[0], vocab)
    bitmask.fill_(-1)  # all allowed: rows without a grammar
    masked_rows = []
    for row, seq in grammars:
        try:
            seq.grammar.fill(bitmask, row)
            masked_rows.append(row)
        except Exception as exc:
            bitmask[row].fill_(-1)
            seq.fail(exc)
    if not masked_rows:
        return logits
    keep = compiler.keep_words(bitmask.shape[1])
    if keep is not None:
        bitmask[masked_rows] &= keep
    masked = logits.clone()
    xgr.apply_token_bitmask_inplace(
        masked, bitmask.to(logits.device, non_blocking=True), vocab_size=vocab, indices=masked_rows
    )
    return masked


def response_format_of(value: Any) -> ResponseFormat | None:
    """OpenAI's ``response_format`` body value as the engine's ResponseFormat (``text`` and null: none).

    Shapes as OpenAI takes them: ``{"type": "text"}``, ``{"type": "json_object"}``, ``{"type": "json_schema",
    "json_schema": {"name", "schema", "strict", "description"}}``. Raises InvalidRequestError naming the field.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise InvalidRequestError("response_format must be an object with a string 'type'", param="response_format")
    kind = value["type"]
    extra = set(value) - {"type", "json_schema"}
    if extra:
        raise InvalidRequestError(
            f"response_format has an unknown field {sorted(extra)[0]!r}", param=f"response_format.{sorted(extra)[0]}"
        )
    if kind in ("text", "json_object"):
        if "json_schema" in value:
            raise InvalidRequestError(
                f"response_format.json_schema is only for type 'json_schema', not {kind!r}",
                param="response_format.json_schema",
            )
        return None if kind == "text" else ResponseFormat(type="json_object")
    if kind != "json_schema":
        raise InvalidRequestError(
            f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind[:40]!r}",
            param="response_format.type",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            "response_format.json_schema must be an object with 'name' and 'schema'",
            param="response_format.json_schema",
        )
    unknown = set(spec) - {"name", "schema", "strict", "description"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidRequestError(
            f"response_format.json_schema has an unknown field {name!r}", param=f"response_format.json_schema.{name}"
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequestError(
            "response_format.json_schema.name must be 1-64 characters of a-z, A-Z, 0-9, '_' and '-'",
            param="response_format.json_schema.name",
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            "response_format.json_schema.schema must be a JSON Schema object",
            param="response_format.json_schema.schema",
        )
    strict = spec.get("strict", False)
    if strict is None:
        strict = False
    if not isinstance(strict, bool):
        raise InvalidRequestError(
            "response_format.json_schema.strict must be a boolean", param="response_format.json_schema.strict"
        )
    if "description" in spec and spec["description"] is not None and not isinstance(spec["description"], str):
        raise InvalidRequestError(
            "response_format.json_schema.description must be a string",
            param="response_format.json_schema.description",
        )
    # Key order kept: the properties' order is the order the object is generated in (as at OpenAI).
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return ResponseFormat(type="json_schema", schema_text=text, strict=strict, name=name)
