"""Decode steps replayed from CUDA graphs: one capture per (batch bucket, block-table width), once per replica.

A decode step of a 14B model launches hundreds of small kernels; eager, the host spends longer launching them than
the GPU spends running them. A graph replays the whole step in one launch. Inputs are copied into static
buffers; rows beyond the real batch are padding that writes to the pool's null block and attends to nothing.
Graphs are captured lazily, the first time a shape is needed, and share one memory pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phifleet.engine.model_runner import ModelRunner

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def bucket(n: int, buckets: tuple[int, ...]) -> int | None:
    for b in buckets:
        if b >= n:
            return b
    return None


def block_bucket(width: int) -> int:
    """Block-table widths round up to a power of two (at least 8): few graphs, little wasted attention work."""
    b = 8
    while b < width:
        b *= 2
    return b


def kept_bytes(max_rows: int, max_blocks: int, vocab: int, itemsize: int) -> int:
    """What captured graphs hold past their capture, at most: each (batch bucket, width) graph keeps its logits
    [rows, vocab] (intermediates return to the shared pool). For Phi-4 at 128 rows and a 16K context, ~0.7 GB —
    memory the KV pool must not count on."""
    rows = sum((*(b for b in BATCH_BUCKETS if b < max_rows), max_rows))
    widths = len({block_bucket(w) for w in range(1, max_blocks + 1)})
    return rows * widths * vocab * itemsize


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    input_ids: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    logits: torch.Tensor


class DecodeGraphs:
    """Captured decode steps keyed by (rows, block-table width)."""

    def __init__(self, runner: ModelRunner, max_rows: int) -> None:
        self.runner = runner
        self.device = runner.pool.device
        self.buckets = (*(b for b in BATCH_BUCKETS if b < max_rows), max_rows)
        self.max_rows = max_rows
        self._graphs: dict[tuple[int, int], _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle()
        self.captures = 0
        self.last: _Captured | None = None  # the graph replayed last (benchmarks time its replay alone)

    def _capture(self, rows: int, width: int) -> _Captured:
        dev = self.device
        ids = torch.zeros(rows, dtype=torch.long, device=dev)
        pos = torch.zeros(rows, dtype=torch.long, device=dev)
        slots = torch.zeros(rows, dtype=torch.long, device=dev)
        tables = torch.zeros(rows, width, dtype=torch.int32, device=dev)
        lens = torch.zeros(rows, dtype=torch.int32, device=dev)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: kernels compiled and autotuned outside the capture
            for _ in range(2):
                self.runner.decode_forward(ids, pos, slots, tables, lens)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self.runner.decode_forward(ids, pos, slots, tables, lens)
        self.captures += 1
        return _Captured(graph, ids, pos, slots, tables, lens, logits)

    def fits(self, rows: int) -> bool:
        return rows <= self.max_rows

    def run(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [rows, vocab] of a decode step; the returned tensor is overwritten by the next replay."""
        rows, width = block_tables.shape
        key = (bucket(rows, self.buckets) or rows, block_bucket(width))
        cap = self._graphs.get(key)
        if cap is None:
            cap = self._graphs[key] = self._capture(*key)
        cap.input_ids[:rows].copy_(input_ids)
        cap.positions[:rows].copy_(positions)
        cap.slots[:rows].copy_(slots)
        cap.context_lens[:rows].copy_(context_lens)
        cap.block_tables.zero_()
        cap.block_tables[:rows, :width].copy_(block_tables)
        if rows < key[0]:
            cap.input_ids[rows:].zero_()
            cap.positions[rows:].zero_()
            cap.slots[rows:].zero_()
            cap.context_lens[rows:].zero_()
        cap.graph.replay()
        self.last = cap
        return cap.logits[:rows]
