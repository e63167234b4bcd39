"""Token log-probabilities as OpenAI reports them: the token's text, its exact bytes, and its alternatives.

A byte-level BPE token can hold part of a UTF-8 character: its text then decodes to U+FFFD, so the
bytes come from the vocabulary entry itself (GPT-2's byte-to-character table, which Phi-4's tokenizer uses).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from phifleet.engine.detokenizer import Decoder
from phifleet.engine.types import TokenLogprob


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: printable characters standing for raw bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def token_bytes(tokenizer: Decoder, token_id: int, text: str) -> tuple[int, ...]:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    piece = convert(token_id) if convert else None
    table = _unicode_to_byte()
    if isinstance(piece, str) and piece and all(c in table for c in piece):
        return tuple(table[c] for c in piece)
    return tuple(text.encode("utf-8", "replace"))


#: What OpenAI reports for a token the model gives no chance at all (JSON has no -Infinity).
FLOOR = -9999.0


def entry(tokenizer: Decoder, token_id: int, logprob: float, top: Sequence[TokenLogprob] = ()) -> TokenLogprob:
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return TokenLogprob(token_id, text, token_bytes(tokenizer, token_id, text), max(logprob, FLOOR), tuple(top))


def token_logprob(tokenizer: Decoder, logp: torch.Tensor, token_id: int, k: int) -> TokenLogprob:
    """The chosen token's entry from one row of log-probabilities, with the ``k`` most likely alternatives."""
    top: list[TokenLogprob] = []
    if k:
        values, ids = torch.topk(logp, k)
        top = [entry(tokenizer, int(i), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)]
    return entry(tokenizer, token_id, float(logp[token_id]), top)
