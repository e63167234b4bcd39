"""Next-token choice for a whole step on the device: per-row knobs as tensors, no per-row host sync.

Sampling is Gumbel-max over a counter-based random stream: the noise for (request seed, completion step, token
id) is a pure hash of those three numbers, so a seeded request draws the same tokens whatever else shares its
batch, and nothing holds a ``torch.Generator`` per row. Top-k and top-p filter the scaled logits row by row
with one sort for the whole step, and only when a row asked for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) without overflowing int64 (the high half is multiplied apart)."""
    lo = (x & 0xFFFF) * c
    hi = ((x >> 16) * c) & 0xFFFF
    return (lo + (hi << 16)) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finalizer: every input bit flips each output bit with probability about 1/2."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """A 32-bit key per (seed, step): seeds are any 64-bit ints, steps the completion token's index."""
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    return _fmix32(lo ^ _fmix32(hi ^ _fmix32((steps + 0x9E3779B9) & _M32)))


def uniform_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """[rows, vocab] uniforms in (0, 1), a pure function of each row's key and the token id."""
    ids = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    x = _fmix32(_fmix32((keys.unsqueeze(1) + _mul32(ids, 0x9E3779B1).unsqueeze(0)) & _M32) ^ 0x5BD1E995)
    return ((x >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


@dataclass
class RowParams:
    """One row's knobs, as the scheduler hands them over."""

    temperature: float
    top_p: float
    top_k: int
    seed: int
    step: int
    logit_bias: dict[int, float] | None = None


class SamplingBatch:
    """The step's rows as device tensors, built once per step from the rows' knobs."""

    def __init__(self, rows: Sequence[RowParams], device: torch.device, vocab: int) -> None:
        self.failures: dict[int, Exception] = {}  # row -> why that row alone cannot be sampled
        for i, r in enumerate(rows):
            outside = [t for t in r.logit_bias or () if t >= vocab]
            if outside:
                self.failures[i] = IndexError(
                    f"logit_bias token id {outside[0]} is outside the vocabulary ({vocab} tokens)"
                )
        rows = [
            RowParams(**{**r.__dict__, "logit_bias": None}) if i in self.failures else r for i, r in enumerate(rows)
        ]
        self.rows = len(rows)
        self.all_greedy = all(r.temperature == 0.0 for r in rows)
        self.any_top_k = any(r.top_k > 0 and r.temperature > 0 for r in rows)
        self.any_top_p = any(r.top_p < 1.0 and r.temperature > 0 for r in rows)
        self.bias = [(i, r.logit_bias) for i, r in enumerate(rows) if r.logit_bias]
        self.device = device
        if self.all_greedy:
            return
        temps = torch.tensor([r.temperature for r in rows], dtype=torch.float32)
        self.greedy = (temps == 0).to(device)
        self.temperature = temps.clamp(min=1e-6).to(device).unsqueeze(1)
        self.top_p = torch.tensor([r.top_p for r in rows], dtype=torch.float32).to(device).unsqueeze(1)
        self.top_k = torch.tensor([r.top_k for r in rows], dtype=torch.int64).to(device)
        seeds = torch.tensor([r.seed % 2**64 - (2**64 if r.seed % 2**64 >= 2**63 else 0) for r in rows])
        self.keys = row_keys(seeds.to(device), torch.tensor([r.step for r in rows]).to(device))

    def biased(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.bias:
            return logits
        logits = logits.clone()
        for i, bias in self.bias:
            ids = torch.tensor(list(bias), device=logits.device)
            vals = torch.tensor(list(bias.values()), device=logits.device, dtype=logits.dtype)
            logits[i].index_add_(0, ids, vals)
        return logits


def _filter(scaled: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Top-k then top-p, each row with its own k and p (k = 0 and p = 1 leave a row alone)."""
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    vocab = scaled.shape[-1]
    drop = torch.zeros_like(sorted_logits, dtype=torch.bool)
    if batch.any_top_k:
        k = torch.where(batch.top_k > 0, batch.top_k.clamp(max=vocab), vocab)
        drop |= torch.arange(vocab, device=scaled.device).unsqueeze(0) >= k.unsqueeze(1)
    if batch.any_top_p:
        probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
        # Drop a token once the mass before it already reaches top_p (the first token always stays).
        drop |= ((probs.cumsum(-1) - probs) >= batch.top_p) & (batch.top_p < 1.0)  # rows that asked only
    return scaled.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))


def sample(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Next token per row ([rows] int64, on the device): argmax for greedy rows, Gumbel-max for the rest."""
    logits = batch.biased(logits)
    greedy = logits.argmax(dim=-1)
    if batch.all_greedy:
        return greedy
    scaled = logits.float() / batch.temperature
    if batch.any_top_k or batch.any_top_p:
        scaled = _filter(scaled, batch)
    gumbel = -torch.log(-torch.log(uniform_noise(batch.keys, scaled.shape[-1])))
    sampled = (scaled + gumbel).argmax(dim=-1)
    return torch.where(batch.greedy, greedy, sampled)
