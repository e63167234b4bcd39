"""Hostile and broken request bodies, shared by the serving tests (over HTTP, beside innocent requests) and the
batch-job tests (as lines of an OpenAI Batch file, beside good lines): the same input must fail alone in both.

Each is the raw JSON text of a /v1/chat/completions body (raw, because some cannot be written by json.dumps:
100,000 levels of nesting), with the ``param`` its 400 must name (a prefix: the field, maybe with its index).
"""

from __future__ import annotations

import json

MESSAGES = [{"role": "user", "content": "Write a review."}]


def _body(**fields: object) -> str:
    return json.dumps({"model": "phi4-tiny", "messages": MESSAGES, "max_tokens": 3, **fields})


POISONED_BODIES: dict[str, tuple[str, str | None]] = {
    # The audit's findings: a lone surrogate made the tokenizer raise TypeError, a huge seed overflowed
    # torch.manual_seed; both failed every request of their engine batch.
    "lone_surrogate": (_body(messages=[{"role": "user", "content": "bad \ud800 text"}]), "messages"),
    "seed_2_64": (_body(seed=2**64), "seed"),
    "image_part": (
        _body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
        "messages",
    ),
    "empty_stop": (_body(stop=[""]), "stop"),
    "null_text_part": (_body(messages=[{"role": "user", "content": [{"type": "text", "text": None}]}]), "messages"),
    "string_max_tokens": (_body(max_tokens="5"), "max_tokens"),
    "tools": (_body(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), "tools"),
    # a schema the grammar engine cannot compile: refused at the replica's prepare, alone
    "response_format": (
        _body(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 2, "maximum": 1}},
            }
        ),
        "response_format",
    ),
    "unknown_field": (_body(frobnicate=1), "frobnicate"),
    "deep_nesting": ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}", None),
}
