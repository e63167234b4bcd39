"""Paged-attention decode: one query token per sequence against a block-paged KV cache.

Two implementations of one contract:

* ``paged_decode_attention_reference``: pure torch with fixed shapes (gathers every column of the block table,
  masks by length). It is what runs on CPU in production and it is CUDA-graph capturable too.
* ``paged_decode_attention_triton``: a split-K ("flash-decoding") Triton kernel for Hopper GPUs. Decode is
  memory-bound, so the design goal is reading each valid K/V row exactly once: grid ``(B, Hkv, num_splits)``,
  each program serves all ``G = H // Hkv`` query heads of its kv head (the GQA group of 4 for Phi-4 loads K/V
  once, not four times), runs an online softmax over its share of the sequence and writes a partial
  ``(max, sum, acc)``; a small second kernel combines the splits. ``num_splits`` comes from shapes only
  (batch, kv heads, block-table width, SM count), so the grid never depends on ``context_lens`` values and the
  call can be captured in a CUDA graph; the split boundaries themselves are computed on the device from each
  sequence's real length, so every split of a long sequence gets work whatever the bucket's table width.

Layout: ``q`` [B, H, D]; ``k_cache``/``v_cache`` [num_blocks, block_size, Hkv, D]; query head ``h`` uses kv
head ``h // G``; token ``t`` of sequence ``b`` lives at ``block_tables[b, t // block_size]``, offset
``t % block_size``; only the first ``context_lens[b]`` tokens are read (table entries past them may hold
anything, and cache slots past them may hold garbage, NaN included). A row with length 0 gives zeros.

Bytes moved per call, for computing achieved bandwidth in a GPU benchmark (K and V of every valid token,
read once per kv head; q, the output, the block tables and the split scratch are small next to it)::

    bytes = sum(context_lens) * Hkv * D * 2 * itemsize
"""

import functools
import math
from typing import Any

import torch

# Tokens per inner-loop tile of the Triton kernel: several 16-token blocks per iteration keeps more bytes in
# flight per program than one block would (rows of a tile are gathered through the block table).
_TILE_N = 64
# Programs to aim for per SM when choosing the number of splits (shapes only); past that, more splits only add
# scratch traffic. On an H200 (triton 3.6, bf16, Phi-4 heads, graph replays) this choice came within ~10% of the
# best of 1..128 splits for B from 1 to 256; 4 warps, 64-token tiles and 2 stages were best or within a few %.
_PROGRAMS_PER_SM = 2
_MAX_SPLITS = 32
_DEFAULT_SM_COUNT = 132  # H100/H200; used under the CPU interpreter


def _check(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
) -> tuple[int, int, int, int, int, int]:
    """Shape checks only (no device reads, so nothing here syncs): returns B, H, D, block_size, Hkv, G."""
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"want q [B, H, D] and caches [blocks, block_size, Hkv, D]; got {q.shape}, {k_cache.shape}")
    batch, heads, dim = q.shape
    _, block_size, kv_heads, cache_dim = k_cache.shape
    if cache_dim != dim or heads % kv_heads:
        raise ValueError(f"q heads/dim {heads}/{dim} do not fit cache kv heads/dim {kv_heads}/{cache_dim}")
    if block_tables.dim() != 2 or block_tables.shape[0] != batch or context_lens.shape != (batch,):
        raise ValueError(f"want block_tables [{batch}, max_blocks], context_lens [{batch}]")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q and caches must share a dtype; got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    return batch, heads, dim, block_size, kv_heads, heads // kv_heads


def paged_decode_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    *,
    max_gather_bytes: int = 256 << 20,
) -> torch.Tensor:
    """Decode attention in plain torch: fixed shapes, fp32 softmax, no host sync (CUDA-graph capturable).

    Gathers the whole block table (in chunks of columns, so that the fp32 copies of the gathered K/V stay under
    ``max_gather_bytes``; chunks are combined with an online softmax) and masks by ``context_lens``. The work is
    proportional to the table width, not to the real lengths: a caller that knows its longest sequence on the
    host can pass ``block_tables[:, :needed_blocks]``.
    """
    batch, heads, dim, block_size, kv_heads, group = _check(q, k_cache, v_cache, block_tables, context_lens)
    max_blocks = block_tables.shape[1]
    device = q.device
    lens = context_lens.to(device=device, dtype=torch.int64).clamp(0, max_blocks * block_size)
    qg = q.float().reshape(batch, kv_heads, group, dim) * scale

    bytes_per_column = 2 * batch * block_size * kv_heads * dim * 4  # K and V of one table column, as fp32
    chunk = max(1, min(max_blocks, max_gather_bytes // bytes_per_column))
    m = torch.full((batch, kv_heads, group, 1), float("-inf"), device=device)
    denom = torch.zeros((batch, kv_heads, group, 1), device=device)
    acc = torch.zeros((batch, kv_heads, group, dim), device=device)
    for c0 in range(0, max_blocks, chunk):
        cols = min(chunk, max_blocks - c0)
        tokens = cols * block_size
        # Entries past a sequence's blocks may be anything (even out of range): read block 0 there instead.
        first_token = (torch.arange(c0, c0 + cols, device=device) * block_size).unsqueeze(0)
        table = torch.where(first_token < lens.unsqueeze(1), block_tables[:, c0 : c0 + cols].long(), 0)
        valid = (torch.arange(c0 * block_size, c0 * block_size + tokens, device=device).unsqueeze(0)) < lens.unsqueeze(
            1
        )
        k = k_cache[table].reshape(batch, tokens, kv_heads, dim)
        v = v_cache[table].reshape(batch, tokens, kv_heads, dim)
        # Slots past the length may hold garbage (NaN): zero V there so that 0 * NaN never reaches the sum.
        v = torch.where(valid[:, :, None, None], v, 0).float().permute(0, 2, 1, 3)  # [B, Hkv, T, D]
        scores = qg @ k.float().permute(0, 2, 3, 1)  # [B, Hkv, G, T]
        scores = torch.where(valid[:, None, None, :], scores, float("-inf"))
        m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isneginf(m_new), 0.0, m_new)  # all masked so far: keep exp() finite
        p = torch.exp(scores - m_safe)
        alpha = torch.exp(m - m_safe)
        denom = denom * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + p @ v
        m = m_new
    out = acc / torch.where(denom > 0, denom, 1.0)  # length 0: acc is 0, so the row is 0
    return out.reshape(batch, heads, dim).to(q.dtype)


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return _DEFAULT_SM_COUNT
    return torch.cuda.get_device_properties(device).multi_processor_count


def _pick_num_splits(batch: int, kv_heads: int, max_tokens: int, tile_n: int, sm_count: int) -> int:
    """Enough programs to fill the GPU, from shapes only (graph-safe); never more splits than tiles."""
    wanted = math.ceil(_PROGRAMS_PER_SM * sm_count / max(1, batch * kv_heads))
    return max(1, min(wanted, _MAX_SPLITS, math.ceil(max_tokens / tile_n)))


@functools.cache
def _kernels() -> tuple[Any, Any]:
    """Builds the Triton kernels on first use, so importing this module needs no Triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def split_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        bt_ptr,
        lens_ptr,
        out_ptr,
        m_ptr,
        l_ptr,
        acc_ptr,
        qk_scale,
        stride_qb,
        stride_qh,
        stride_kn,
        stride_kt,
        stride_kh,
        stride_vn,
        stride_vt,
        stride_vh,
        stride_btb,
        stride_ob,
        stride_oh,
        num_heads,
        max_tokens,
        G: tl.constexpr,
        G_PAD: tl.constexpr,
        D: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
        TILE_N: tl.constexpr,
        NUM_SPLITS: tl.constexpr,
        FP32: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        kvh = tl.program_id(1)
        split = tl.program_id(2)

        ctx = tl.load(lens_ptr + b)
        ctx = tl.maximum(tl.minimum(ctx, max_tokens), 0)  # never read past the table's width
        # This split's share of the real sequence, whole tiles each: [start, end).
        tiles_per_split = tl.cdiv(tl.cdiv(ctx, TILE_N), NUM_SPLITS)
        start = split * tiles_per_split * TILE_N
        end = tl.minimum(start + tiles_per_split * TILE_N, ctx)
        n_tiles = tl.cdiv(tl.maximum(end - start, 0), TILE_N)

        g = tl.arange(0, G_PAD)
        d = tl.arange(0, D)
        n = tl.arange(0, TILE_N)
        g_ok = g < G
        heads = kvh * G + g
        # The group's G query heads, padded to the 16 rows a tensor-core dot needs (padding rows are zeros).
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=g_ok[:, None], other=0.0)

        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D], tl.float32)
        bt_row = bt_ptr + b * stride_btb
        k_head = k_ptr + kvh * stride_kh
        v_head = v_ptr + kvh * stride_vh
        for i in range(n_tiles):
            t = start + i * TILE_N + n
            ok = t < end
            block = tl.load(bt_row + t // BLOCK_SIZE, mask=ok, other=0).to(tl.int64)
            slot = t % BLOCK_SIZE
            k = tl.load(
                k_head + block[:, None] * stride_kn + slot[:, None] * stride_kt + d[None, :],
                mask=ok[:, None],
                other=0.0,
            )
            # fp32 caches: exact products (Triton's fp32 default is TF32); bf16/fp16: tensor cores, fp32 accumulate.
            qk = tl.dot(q, tl.trans(k), input_precision="ieee") if FP32 else tl.dot(q, tl.trans(k))
            qk = tl.where(ok[None, :], qk * qk_scale, float("-inf"))  # log2 domain
            m_new = tl.maximum(m_i, tl.max(qk, 1))  # finite: every tile has a valid token
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(
                v_head + block[:, None] * stride_vn + slot[:, None] * stride_vt + d[None, :],
                mask=ok[:, None],
                other=0.0,
            )
            pv = tl.dot(p, v, input_precision="ieee") if FP32 else tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new

        if NUM_SPLITS == 1:
            o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # length 0: acc is 0
            o_ptr = out_ptr + b * stride_ob + heads[:, None] * stride_oh + d[None, :]
            tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=g_ok[:, None])
        else:
            # Every split writes, even an empty one (m=-inf, l=0, acc=0): the scratch needs no initialising.
            row = (b * num_heads + heads) * NUM_SPLITS + split
            tl.store(m_ptr + row, m_i, mask=g_ok)
            tl.store(l_ptr + row, l_i, mask=g_ok)
            tl.store(acc_ptr + row[:, None] * D + d[None, :], acc, mask=g_ok[:, None])

    @triton.jit
    def reduce_kernel(
        m_ptr,
        l_ptr,
        acc_ptr,
        out_ptr,
        stride_ob,
        stride_oh,
        num_heads,
        NUM_SPLITS: tl.constexpr,
        S_PAD: tl.constexpr,
        D: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        s = tl.arange(0, S_PAD)
        d = tl.arange(0, D)
        s_ok = s < NUM_SPLITS
        row = (b * num_heads + h) * NUM_SPLITS + s
        m = tl.load(m_ptr + row, mask=s_ok, other=float("-inf"))
        l_s = tl.load(l_ptr + row, mask=s_ok, other=0.0)
        m_max = tl.max(m, 0)
        m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # every split empty (length 0)
        w = tl.exp2(m - m_max)  # empty splits weigh 0
        denom = tl.sum(w * l_s, 0)
        acc = tl.load(acc_ptr + row[:, None] * D + d[None, :], mask=s_ok[:, None], other=0.0)
        o = tl.sum(acc * w[:, None], 0) / tl.where(denom > 0, denom, 1.0)
        tl.store(out_ptr + b * stride_ob + h * stride_oh + d, o.to(out_ptr.dtype.element_ty))

    return split_kernel, reduce_kernel


def paged_decode_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Decode attention through the split-K Triton kernel; same contract as the reference, graph-capturable.

    ``out`` (optional) receives the result, [B, H, D] in q's dtype. ``num_splits`` overrides the shape-based
    choice (tests and tuning); the split scratch is allocated per call from shapes, which torch's caching
    allocator also serves inside a CUDA-graph capture.
    """
    return _launch(q, k_cache, v_cache, block_tables, context_lens, scale, out, num_splits=num_splits)


def _launch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
    tile_n: int = _TILE_N,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """The launch with its tuning knobs exposed (for GPU sweeps); the public function keeps the defaults."""
    batch, heads, dim, block_size, kv_heads, group = _check(q, k_cache, v_cache, block_tables, context_lens)
    if dim < 16 or dim & (dim - 1):
        raise ValueError(f"head dim must be a power of two >= 16, got {dim}")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or q.stride(-1) != 1 or block_tables.stride(1) != 1:
        raise ValueError("q, the caches and block_tables need a contiguous last dimension")
    if context_lens.stride(0) != 1:
        raise ValueError("context_lens must be contiguous")
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype} with a contiguous last dimension")
    if batch == 0:
        return out

    max_tokens = block_tables.shape[1] * block_size
    tile_n = max(16, tile_n)
    if num_splits is None:
        num_splits = _pick_num_splits(batch, kv_heads, max_tokens, tile_n, _sm_count(q.device))
    num_splits = max(1, num_splits)
    split_kernel, reduce_kernel = _kernels()

    if num_splits > 1:
        m_buf = torch.empty((batch, heads, num_splits), device=q.device, dtype=torch.float32)
        l_buf = torch.empty_like(m_buf)
        acc_buf = torch.empty((batch, heads, num_splits, dim), device=q.device, dtype=torch.float32)
    else:
        m_buf = l_buf = acc_buf = out  # unused: the kernel writes the output directly
    split_kernel[(batch, kv_heads, num_splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        out,
        m_buf,
        l_buf,
        acc_buf,
        scale * math.log2(math.e),
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        block_tables.stride(0),
        out.stride(0),
        out.stride(1),
        heads,
        max_tokens,
        G=group,
        G_PAD=max(16, 1 << (group - 1).bit_length()),
        D=dim,
        BLOCK_SIZE=block_size,
        TILE_N=tile_n,
        NUM_SPLITS=num_splits,
        FP32=q.dtype == torch.float32,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    if num_splits > 1:
        reduce_kernel[(batch, heads)](
            m_buf,
            l_buf,
            acc_buf,
            out,
            out.stride(0),
            out.stride(1),
            heads,
            NUM_SPLITS=num_splits,
            S_PAD=1 << (num_splits - 1).bit_length(),
            D=dim,
            num_warps=4,
        )
    return out
