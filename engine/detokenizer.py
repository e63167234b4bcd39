"""Incremental detokenization with stop strings: what a stream may emit after each token.

Byte-level BPE can split one character over several tokens, and a stop string can arrive split
over several tokens too, so text is only released once it is whole and cannot start a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Decoder, stop: Sequence[str] = ()) -> None:
        self._tok = tokenizer
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""
        self._emitted = 0
        self.stopped = False

    def add(self, token_id: int) -> None:
        """Append a generated token; sets ``stopped`` when the text now contains a stop string."""
        if self.stopped:
            return
        self._ids.append(token_id)
        prefix = self._tok.decode(self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        full = self._tok.decode(self._ids[self._prefix_offset :], skip_special_tokens=True)
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return  # an incomplete UTF-8 sequence: wait for the next token
        old_len = len(self.text)
        self.text += full[len(prefix) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        if self._stop:
            self._check_stop(old_len)

    def _check_stop(self, old_len: int) -> None:
        longest = max(len(s) for s in self._stop)
        start = max(0, old_len - longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def _held_back(self) -> int:
        """Characters at the end of the text that could still become a stop string.

        Only positions holding a stop string's first character are tried, earliest first (the longest tail
        wins), so a step costs about the stop strings' length, not its square.
        """
        if self.stopped or not self._stop:
            return 0
        held = 0
        for stop in self._stop:
            pos = self.text.find(stop[0], max(0, len(self.text) - len(stop) + 1))
            while pos != -1:
                if stop.startswith(self.text[pos:]):
                    held = max(held, len(self.text) - pos)
                    break
                pos = self.text.find(stop[0], pos + 1)
        return held

    def delta(self, final: bool = False) -> str:
        """Text not yet emitted that is safe to emit now (everything, once ``final``)."""
        end = len(self.text) if final else len(self.text) - self._held_back()
        if end <= self._emitted:
            return ""
        out = self.text[self._emitted : end]
        self._emitted = end
        return out
