"""Paged decode attention: the torch reference against dense SDPA per sequence, the Triton kernel against both.

The Triton half runs where Triton can: on CUDA, or on CPU under its interpreter (``TRITON_INTERPRET=1``, slow,
so its shapes stay small). The caches start as NaN and the block tables hold garbage past each sequence's
blocks, so any read of a slot that is not part of a sequence shows up as a NaN or an out-of-range error.
"""

import importlib.util
import math
import os

import pytest
import torch
import torch.nn.functional as F

from phifleet.engine.kernels.paged_decode import paged_decode_attention_reference, paged_decode_attention_triton

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TRITON_OK = importlib.util.find_spec("triton") is not None and (
    torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
)
needs_triton = pytest.mark.skipif(not TRITON_OK, reason="needs Triton and CUDA, or TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# Triton's CPU interpreter multiplies bfloat16 bit patterns in tl.dot (triton-lang/triton#11584): there the
# half-precision path (the same kernel code) is checked in float16, and bfloat16 only on CUDA.
HALF = torch.bfloat16 if torch.cuda.is_available() else torch.float16
bf16_on_cuda = pytest.param(
    torch.bfloat16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="interpreter: bf16 tl.dot")
)
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def make_case(
    lens: list[int],
    kv_heads: int,
    group: int,
    dim: int,
    block_size: int,
    dtype: torch.dtype,
    seed: int = 0,
    extra_columns: int = 1,
) -> tuple[torch.Tensor, ...]:
    """Random q and caches; each sequence's blocks are a random, non-contiguous pick from the pool."""
    gen = torch.Generator().manual_seed(seed)
    needed = [math.ceil(n / block_size) for n in lens]
    max_blocks = max([*needed, 1]) + extra_columns
    num_blocks = sum(needed) + 3
    order = torch.randperm(num_blocks, generator=gen).tolist()
    # Past each sequence's blocks: 0, -1 or far out of range, all of which must go unread.
    junk = torch.tensor([0, -1, num_blocks + 1000], dtype=torch.int32)
    block_tables = junk[torch.randint(0, 3, (len(lens), max_blocks), generator=gen)]
    k_cache = torch.full((num_blocks, block_size, kv_heads, dim), float("nan"), dtype=dtype)
    v_cache = torch.full_like(k_cache, float("nan"))
    for b, n in enumerate(lens):
        for j in range(needed[b]):
            block = order.pop()
            block_tables[b, j] = block
            filled = min(block_size, n - j * block_size)
            k_cache[block, :filled] = torch.randn(filled, kv_heads, dim, generator=gen).to(dtype)
            v_cache[block, :filled] = torch.randn(filled, kv_heads, dim, generator=gen).to(dtype)
    q = torch.randn(len(lens), kv_heads * group, dim, generator=gen).to(dtype)
    context_lens = torch.tensor(lens, dtype=torch.int32)
    return q, k_cache, v_cache, block_tables, context_lens


def naive(q, k_cache, v_cache, block_tables, context_lens, scale) -> torch.Tensor:
    """One sequence at a time: its true K/V gathered token by token, dense SDPA in float64."""
    _, block_size, kv_heads, dim = k_cache.shape
    heads = q.shape[1]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for b, n in enumerate(context_lens.tolist()):
        if n == 0:
            continue
        slots = [int(block_tables[b, t // block_size]) * block_size + t % block_size for t in range(n)]
        k = k_cache.reshape(-1, kv_heads, dim)[slots].double().repeat_interleave(heads // kv_heads, dim=1)
        v = v_cache.reshape(-1, kv_heads, dim)[slots].double().repeat_interleave(heads // kv_heads, dim=1)
        o = F.scaled_dot_product_attention(
            q[b].double().unsqueeze(1), k.transpose(0, 1), v.transpose(0, 1), scale=scale
        )
        out[b] = o.squeeze(1)
    return out


def lens_for(block_size: int) -> list[int]:
    """Empty rows, block boundaries either side, and a few odd lengths."""
    return [0, 1, block_size - 1, block_size, block_size + 1, 2 * block_size, 3 * block_size + 5, 0, 7]


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert not actual.isnan().any()
    torch.testing.assert_close(actual, expected, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32, 64])
def test_reference_matches_dense_attention(dtype: torch.dtype, block_size: int) -> None:
    case = make_case(lens_for(block_size), kv_heads=2, group=4, dim=32, block_size=block_size, dtype=dtype)
    scale = 32**-0.5
    out = paged_decode_attention_reference(*case, scale)
    assert out.dtype == dtype and out.shape == case[0].shape
    close(out, naive(*case, scale), dtype)
    assert (out[0] == 0).all() and (out[7] == 0).all()  # length-0 rows


def test_reference_phi4_heads_and_chunking() -> None:
    """Phi-4's heads (40 over 10 kv heads, dim 128); a tiny gather budget forces one table column per chunk."""
    case = make_case([0, 37, 16, 130], kv_heads=10, group=4, dim=128, block_size=16, dtype=torch.float32, seed=1)
    scale = 128**-0.5
    expected = naive(*case, scale)
    close(paged_decode_attention_reference(*case, scale), expected, torch.float32)
    close(paged_decode_attention_reference(*case, scale, max_gather_bytes=1), expected, torch.float32)


def test_reference_all_rows_empty() -> None:
    case = make_case([0, 0, 0], kv_heads=2, group=2, dim=16, block_size=16, dtype=torch.float32)
    assert (paged_decode_attention_reference(*case, 0.25) == 0).all()


def to_device(case: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(DEVICE) for t in case)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, bf16_on_cuda])
@pytest.mark.parametrize("block_size", [16, 32, 64])
@pytest.mark.parametrize("num_splits", [None, 1, 3])
def test_triton_matches_reference(dtype: torch.dtype, block_size: int, num_splits: int | None) -> None:
    case = to_device(make_case(lens_for(block_size), kv_heads=2, group=4, dim=32, block_size=block_size, dtype=dtype))
    scale = 32**-0.5
    out = paged_decode_attention_triton(*case, scale, num_splits=num_splits)
    assert out.dtype == dtype and out.shape == case[0].shape
    close(out, paged_decode_attention_reference(*case, scale), dtype)
    assert (out[0] == 0).all() and (out[7] == 0).all()


@needs_triton
def test_triton_phi4_heads_into_out() -> None:
    """Phi-4's head layout, the auto split count, a caller's output buffer; lengths span several 64-token tiles."""
    case = to_device(make_case([130, 0, 200], kv_heads=10, group=4, dim=128, block_size=16, dtype=HALF))
    out = torch.full_like(case[0], float("nan"))
    result = paged_decode_attention_triton(*case, 128**-0.5, out)
    assert result is out
    close(out, paged_decode_attention_reference(*case, 128**-0.5), HALF)


@needs_cuda
@needs_triton
def test_cuda_graph_replay_follows_new_lengths() -> None:
    """Both paths captured once; replays with other lengths and tables (same shapes) match eager calls."""
    q, k_cache, v_cache, block_tables, context_lens = to_device(
        make_case([40, 0, 17, 300], kv_heads=10, group=4, dim=128, block_size=16, dtype=torch.bfloat16, extra_columns=8)
    )
    scale = 128**-0.5
    fns = [paged_decode_attention_triton, paged_decode_attention_reference]
    for fn in fns:  # warm-up (compiles the kernels) outside the capture
        fn(q, k_cache, v_cache, block_tables, context_lens, scale)
    torch.cuda.synchronize()
    graphs, outs = [], []
    for fn in fns:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs.append(fn(q, k_cache, v_cache, block_tables, context_lens, scale))
        graphs.append(graph)
    new = to_device(
        make_case([0, 290, 16, 5], kv_heads=10, group=4, dim=128, block_size=16, dtype=torch.bfloat16, seed=3)
    )
    for dst, src in zip((q, k_cache, v_cache, block_tables, context_lens), new, strict=True):
        dst.zero_()
        dst[tuple(slice(0, s) for s in src.shape)] = src
    expected = naive(*(t.cpu() for t in (q, k_cache, v_cache, block_tables, context_lens)), scale)
    for graph, out in zip(graphs, outs, strict=True):
        graph.replay()
        torch.cuda.synchronize()
        close(out, expected, torch.bfloat16)
