"""Static batching: length-bucketed, left-padded batches decoded in lock-step with a KV cache.

Rows that finish leave the batch (their cache rows are dropped), so one long request does not
make the others pay for padding steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from phifleet.engine.forward import prefill
from phifleet.engine.sampling import choose_next_tokens
from phifleet.engine.sequence import Sequence


def length_buckets(seqs: list[Sequence], max_batch_size: int, max_batch_tokens: int) -> Iterator[list[Sequence]]:
    """Group by prompt length so padding stays small; bound rows and padded tokens per batch."""
    ordered = sorted(seqs, key=lambda s: len(s.prompt_ids))
    batch: list[Sequence] = []
    longest = 0
    for seq in ordered:
        need = len(seq.prompt_ids) + seq.max_tokens
        if batch and (len(batch) >= max_batch_size or max(longest, need) * (len(batch) + 1) > max_batch_tokens):
            yield batch
            batch, longest = [], 0
        batch.append(seq)
        longest = max(longest, need)
    if batch:
        yield batch


def decode_steps(
    model: Callable[..., object], seqs: list[Sequence], pad_id: int, device: torch.device
) -> Iterator[list[Sequence]]:
    """Decode one batch, yielding the rows that advanced after every step; each Sequence decides when it is done.

    Closing the generator early abandons the batch (a streaming client that went away). Inference
    mode is entered per step, never held across a ``yield``, so it cannot leak into the caller.
    """
    with torch.inference_mode():
        out, cache, mask, positions = prefill(model, [s.prompt_ids for s in seqs], pad_id, device)
        active = list(seqs)
        tokens, entries = choose_next_tokens(out.logits[:, -1, :], active)
    while True:
        for seq, tok, entry in zip(active, tokens, entries, strict=True):
            seq.push(tok, entry)
        yield active
        keep = [i for i, s in enumerate(active) if not s.finished]
        if not keep:
            return
        with torch.inference_mode():
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                active = [active[i] for i in keep]
                tokens = [tokens[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            positions = positions[:, -1:] + 1
            step_ids = torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1)
            out = model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            tokens, entries = choose_next_tokens(out.logits[:, -1, :], active)
