"""The KV cache as one preallocated pool of fixed-size blocks, written in place.

Every layer's keys and values live in ``[num_blocks, block_size, kv_heads, head_dim]`` tensors allocated once
per replica; a sequence owns a list of block ids (its block table). Nothing is concatenated or copied per step:
a new token's K/V is scattered to its slot, and a finished sequence's blocks go back to the free list at once.
Block 0 is never handed out: padding rows of a captured CUDA graph write there and read nothing.
Blocks carry a reference count so that identical prompt prefixes can be shared by reference (prefix reuse).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class OutOfBlocks(RuntimeError):
    """The pool cannot hold what was asked; the scheduler preempts or waits, it never crashes on this."""


@dataclass(frozen=True)
class KVShape:
    layers: int
    kv_heads: int
    head_dim: int
    block_size: int
    num_blocks: int
    dtype: torch.dtype

    def bytes_per_block(self) -> int:
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.layers * self.block_size * self.kv_heads * self.head_dim * itemsize


def blocks_that_fit(
    free_bytes: int, layers: int, kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype
) -> int:
    """How many blocks ``free_bytes`` of device memory holds."""
    per = KVShape(layers, kv_heads, head_dim, block_size, 1, dtype).bytes_per_block()
    return max(0, free_bytes // per)


class KVPool:
    """Per-layer K/V storage plus the block allocator. Not thread-safe: the engine loop owns it."""

    NULL_BLOCK = 0

    def __init__(self, shape: KVShape, device: torch.device) -> None:
        if shape.num_blocks < 2:
            raise ValueError("a KV pool needs at least 2 blocks (block 0 is reserved)")
        self.shape = shape
        self.block_size = shape.block_size
        self.device = device
        dims = (shape.num_blocks, shape.block_size, shape.kv_heads, shape.head_dim)
        self.k = [torch.zeros(dims, dtype=shape.dtype, device=device) for _ in range(shape.layers)]
        self.v = [torch.zeros(dims, dtype=shape.dtype, device=device) for _ in range(shape.layers)]
        self._refs = [0] * shape.num_blocks
        self._refs[self.NULL_BLOCK] = 1  # never freed, never handed out
        self._free = list(range(shape.num_blocks - 1, 0, -1))  # pop() hands out low ids first

    # --- allocation ------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Blocks that can ever be handed out (all but the null block)."""
        return self.shape.num_blocks - 1

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.capacity - len(self._free)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise OutOfBlocks(f"{n} KV blocks asked, {len(self._free)} free")
        out = [self._free.pop() for _ in range(n)]
        for b in out:
            self._refs[b] = 1
        return out

    def share(self, block: int) -> None:
        """One more holder of ``block`` (a sequence reusing a cached prefix block)."""
        if self._refs[block] <= 0:
            raise ValueError(f"block {block} is not allocated")
        self._refs[block] += 1

    def release(self, blocks: list[int]) -> None:
        """Drop one reference to each block; a block nobody holds returns to the free list."""
        for b in blocks:
            if b == self.NULL_BLOCK:
                continue
            refs = self._refs[b] - 1
            if refs < 0:
                raise ValueError(f"block {b} released more often than allocated")
            self._refs[b] = refs
            if refs == 0:
                self._free.append(b)

    def refs(self, block: int) -> int:
        return self._refs[block]

    # --- addressing ------------------------------------------------------------------------
    def slots(self, blocks: list[int], start: int, end: int) -> list[int]:
        """Flat slot ids (block * block_size + offset) of token positions [start, end) of a sequence."""
        bs = self.block_size
        return [blocks[p // bs] * bs + p % bs for p in range(start, end)]
