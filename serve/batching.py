"""Dynamic batching in front of one engine: the requests that wait while the engine is busy form its next batch.

Why not Ray Serve's `@serve.batch`: its loop cuts batches on a timer, independent of the handler (since batches
may run concurrently, ray-project/ray#53096, a formed batch waits on a semaphore for its turn). While one batch
runs, the requests arriving meanwhile are cut into many small batches (one per `batch_wait_timeout_s`) that
queue, one by one, for the engine. Under load the engine so ran batches of one or two: on 2 cores at
concurrency 32, a mean batch of 1.4 with ~30 requests waiting in the replica (Ray 2.60, bench/serve_cpu.py).
Here a batch is formed only when the engine is free, from everything waiting by then.

The gathering wait (`wait_s`, up to a full batch) is paid only while requests overlap: a replica whose recent
requests each came alone starts the next one at once instead of waiting for company that is not coming.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class Work(Protocol):
    """One request waiting for the engine. Work of different kinds never shares a batch."""

    kind: str

    @property
    def dropped(self) -> bool:
        """The caller went away: leave it out of the batch."""
        ...


log = logging.getLogger(__name__)
W = TypeVar("W", bound=Work)

#: How long overlapping requests keep the gathering wait on after the last overlap was seen.
OVERLAP_MEMORY_S = 1.0


class Batcher(Generic[W]):
    """Queue work; one loop takes batches (the oldest work's kind, FIFO) and awaits ``run`` on each in turn."""

    def __init__(self, run: Callable[[str, list[W]], Awaitable[None]], max_batch_size: int, wait_s: float) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.pending: list[W] = []
        self.in_batch = 0  # work in the batch now running
        self.largest_batch: dict[str, int] = {}
        self.batches: dict[str, int] = {}  # batches run, by kind
        self.batched: dict[str, int] = {}  # work run in them, by kind
        self._arrived = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._overlap_at = float("-inf")  # last time work arrived while other work was waiting or running

    def submit(self, work: W) -> None:
        if self.pending or self.in_batch:
            self._overlap_at = time.monotonic()
        self.pending.append(work)
        self._arrived.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def waiting(self) -> int:
        return len(self.pending)

    def _full(self) -> bool:
        kind = self.pending[0].kind
        return sum(1 for w in self.pending if w.kind == kind) >= self.max_batch_size

    async def _gather(self) -> None:
        """Wait up to ``wait_s`` for a full batch, while requests have lately been overlapping."""
        if self.wait_s <= 0 or time.monotonic() - self._overlap_at > OVERLAP_MEMORY_S:
            return
        deadline = time.monotonic() + self.wait_s
        while not self._full() and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> tuple[str, list[W]]:
        kind = self.pending[0].kind
        batch: list[W] = []
        rest: list[W] = []
        for w in self.pending:
            if w.dropped:
                continue
            (batch if w.kind == kind and len(batch) < self.max_batch_size else rest).append(w)
        self.pending = rest
        return kind, batch

    async def _loop(self) -> None:
        while True:
            self.pending = [w for w in self.pending if not w.dropped]
            if not self.pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather()
            kind, batch = self._take()
            if not batch:
                continue
            self.largest_batch[kind] = max(self.largest_batch.get(kind, 0), len(batch))
            self.batches[kind] = self.batches.get(kind, 0) + 1
            self.batched[kind] = self.batched.get(kind, 0) + len(batch)
            self.in_batch = len(batch)
            try:
                await self._run(kind, batch)
            except Exception:  # ``run`` hands errors to its callers; anything else must not stop the loop
                log.exception("a %s batch of %d failed", kind, len(batch))
            finally:
                self.in_batch = 0
