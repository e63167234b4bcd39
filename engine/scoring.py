"""Label scoring: the log-likelihood of each candidate answer after the prompt, without generating.

The prompt is run once; its KV cache is repeated once per label and only the label tokens are
run on top of it. That costs one prompt pass plus a short label pass instead of one full pass per
(prompt, label) pair, and the answer is always one of the candidates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phifleet.engine.forward import pad, prefill


@torch.inference_mode()
def label_logprobs(
    model: Callable[..., object],
    prompts: list[list[int]],
    labels: list[list[int]],
    pad_id: int,
    device: torch.device,
) -> torch.Tensor:
    """Summed log-probability of each label's tokens after each prompt: a [prompts, labels] tensor."""
    n_labels = len(labels)
    out, cache, mask, positions = prefill(model, prompts, pad_id, device)
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).repeat_interleave(n_labels, dim=0)

    label_ids, label_mask = pad(labels, pad_id, device, side="right")
    rows_ids = label_ids.repeat(len(prompts), 1)  # row p*L + l holds label l for prompt p
    rows_mask = label_mask.repeat(len(prompts), 1)
    token_logp = first.gather(1, rows_ids[:, :1])  # [rows, 1]: the label's first token
    width = label_ids.shape[1]
    if width > 1:
        cache.batch_repeat_interleave(n_labels)
        full_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), rows_mask[:, : width - 1]], dim=1)
        start = positions[:, -1:].repeat_interleave(n_labels, dim=0) + 1
        label_pos = start + torch.arange(width - 1, device=device).unsqueeze(0)
        out = model(
            input_ids=rows_ids[:, : width - 1],
            attention_mask=full_mask,
            position_ids=label_pos,
            cache=cache,
            use_cache=True,
        )
        rest = torch.log_softmax(out.logits.float(), dim=-1).gather(2, rows_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        token_logp = torch.cat([token_logp, rest], dim=1)
    summed = (token_logp * rows_mask).sum(dim=1)
    return summed.view(len(prompts), n_labels)
