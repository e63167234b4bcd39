"""Padding and the prompt pass shared by generation and label scoring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from transformers import DynamicCache


def pad(
    rows: list[list[int]], pad_id: int, device: torch.device, side: Literal["left", "right"] = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one [rows, longest] tensor plus its attention mask (1 = real token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def prefill(
    model: Callable[..., Any], prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[Any, DynamicCache, torch.Tensor, torch.Tensor]:
    """Run left-padded prompts once, keeping only the last position's logits.

    Returns (output, KV cache, attention mask, position ids); positions skip the padding, so a
    padded row computes what it would alone.
    """
    ids, mask = pad(prompts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
    )
    return out, cache, mask, positions
