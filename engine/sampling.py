"""Per-row next-token choice: each row keeps its own temperature, top-p, top-k and random stream."""

from __future__ import annotations

import torch

from phifleet.engine.logprobs import token_logprob
from phifleet.engine.sequence import Sequence
from phifleet.engine.types import TokenLogprob


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


def _biased(row_logits: torch.Tensor, bias: dict[int, float] | None) -> torch.Tensor:
    """One row's logits with its ``logit_bias`` added (a copy)."""
    if not bias:
        return row_logits
    biased = row_logits.clone()
    ids = torch.tensor(list(bias), device=row_logits.device)
    biased[ids] += torch.tensor(list(bias.values()), device=row_logits.device, dtype=row_logits.dtype)
    return biased


def _sample(row_logits: torch.Tensor, seq: Sequence) -> int:
    p = seq.params
    if seq.generator is None:
        seq.generator = torch.Generator(device=row_logits.device)
        if p.seed is not None:
            seq.generator.manual_seed(p.seed % 2**64)  # negative seeds too: manual_seed takes [0, 2**64)
        else:
            seq.generator.seed()
    filtered = _filter_logits(row_logits.float() / p.temperature, p.top_k, p.top_p)
    return int(torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=seq.generator).item())


def choose_next_tokens(logits: torch.Tensor, seqs: list[Sequence]) -> tuple[list[int], list[TokenLogprob | None]]:
    """logits: [rows, vocab] for the rows' last positions, in the order of ``seqs``.

    Returns each row's token and, where asked, its log-probability entry (under the model's own distribution,
    as OpenAI reports them). A row whose sampling fails is failed alone (``Sequence.fail``); its neighbours
    carry on and its token is a placeholder that ``push`` ignores.
    """
    greedy = logits.argmax(dim=-1).tolist()
    logp = torch.log_softmax(logits.float(), dim=-1) if any(s.params.logprobs is not None for s in seqs) else None
    tokens: list[int] = []
    entries: list[TokenLogprob | None] = []
    for row, seq in enumerate(seqs):
        p = seq.params
        try:
            row_logits = _biased(logits[row], p.logit_bias)
            if p.greedy:
                token = int(row_logits.argmax()) if p.logit_bias else greedy[row]
            else:
                token = _sample(row_logits, seq)
            entry = None
            if p.logprobs is not None and logp is not None:
                entry = token_logprob(seq.tokenizer, logp[row], token, p.logprobs)
        except Exception as exc:  # this request's own failure; the batch goes on
            seq.fail(exc)
            token, entry = greedy[row], None
        tokens.append(token)
        entries.append(entry)
    return tokens, entries
