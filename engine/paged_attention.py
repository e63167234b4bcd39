"""Attention over the paged KV pool: K/V scattered to their slots, queries attend through block tables.

Two shapes of work share a step. Decode tokens (one query per sequence) go through one batched call
(``phifleet.engine.kernels.paged_decode``: a Triton split-K kernel on GPU, a fixed-shape torch gather on CPU or
when Triton is absent). Prefill chunks (many queries of one sequence, possibly continuing an earlier chunk or a
shared prefix) gather that sequence's keys once and run SDPA with a causal mask offset by the chunk's start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from phifleet.engine.kernels import paged_decode


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> None:
    """Scatter this step's keys/values ([tokens, kv_heads, dim]) to their flat slots, in place."""
    _, _, kv_heads, dim = k_cache.shape
    k_cache.view(-1, kv_heads, dim).index_copy_(0, slots, k)
    v_cache.view(-1, kv_heads, dim).index_copy_(0, slots, v)


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    context_slots: torch.Tensor,
    start: int,
    scale: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Queries [chunk, heads, dim] at positions start.. attend to the sequence's keys at context_slots (0..end).

    ``mask`` ([chunk, keys], True = attend) replaces the causal pattern: label branches of one prompt scored in
    one pass see the prompt and their own earlier tokens, never each other.
    """
    _, _, kv_heads, dim = k_cache.shape
    k = k_cache.view(-1, kv_heads, dim).index_select(0, context_slots).transpose(0, 1).unsqueeze(0)
    v = v_cache.view(-1, kv_heads, dim).index_select(0, context_slots).transpose(0, 1).unsqueeze(0)
    qh = q.transpose(0, 1).unsqueeze(0)
    chunk = q.shape[0]
    if mask is None and start == 0:
        out = F.scaled_dot_product_attention(qh, k, v, is_causal=True, scale=scale, enable_gqa=True)
        return out.squeeze(0).transpose(0, 1)
    if mask is None:  # a chunk after cached or earlier-computed positions: causal, offset by its start
        keys = context_slots.shape[0]
        rows = torch.arange(chunk, device=q.device).unsqueeze(1) + start
        mask = torch.arange(keys, device=q.device).unsqueeze(0) <= rows
    # With a mask, grouped-query SDPA falls back to the math kernel (scores materialized for every head): repeat
    # the KV heads instead, so the memory-efficient kernel runs.
    group = q.shape[1] // kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    out = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, scale=scale)
    return out.squeeze(0).transpose(0, 1)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    use_triton: bool,
) -> torch.Tensor:
    """One query per sequence [rows, heads, dim]; rows with context length 0 (graph padding) give zeros."""
    if use_triton:
        return paged_decode.paged_decode_attention_triton(q, k_cache, v_cache, block_tables, context_lens, scale)
    return gathered_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)


def gathered_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """The portable path: gather each row's blocks (the table's full width, fixed shapes) and run one SDPA.

    Query heads are grouped under their KV head ([rows, kv_heads, group, dim]), so keys are never repeated.
    Table entries past a row's length must be valid block ids (the loop pads with the null block).
    """
    rows, heads, dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    width = block_tables.shape[1]
    table = block_tables.long()
    k = k_cache[table].view(rows, width * block_size, kv_heads, dim).transpose(1, 2)
    v = v_cache[table].view(rows, width * block_size, kv_heads, dim).transpose(1, 2)
    lens = context_lens.long().unsqueeze(1)
    valid = torch.arange(width * block_size, device=q.device).unsqueeze(0) < lens.clamp(min=1)
    qg = q.view(rows, kv_heads, heads // kv_heads, dim)
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=valid[:, None, None, :], scale=scale)
    return (out * (lens > 0).to(out.dtype).unsqueeze(-1).unsqueeze(-1)).view(rows, heads, dim)


def triton_usable(device: torch.device) -> bool:
    """The Triton kernel runs on CUDA devices where the triton package imports."""
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
