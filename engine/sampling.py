"""Per-row next-token choice: each row keeps its own temperature, top-p, top-k and random stream."""

from __future__ import annotations

import torch

from phifleet.engine.sequence import Sequence


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Drop a token once the mass before it already reaches top_p (the first token always stays).
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose_next_tokens(logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    """logits: [rows, vocab] for the rows' last positions, in the order of ``seqs``."""
    greedy = logits.argmax(dim=-1).tolist()
    out: list[int] = []
    for row, seq in enumerate(seqs):
        p = seq.params
        if p.greedy:
            out.append(greedy[row])
            continue
        if seq.generator is None:
            seq.generator = torch.Generator(device=logits.device)
            if p.seed is not None:
                seq.generator.manual_seed(p.seed)
            else:
                seq.generator.seed()
        row_logits = _filter_logits(logits[row].float() / p.temperature, p.top_k, p.top_p)
        probs = torch.softmax(row_logits, dim=-1)
        out.append(int(torch.multinomial(probs, 1, generator=seq.generator).item()))
    return out
