"""The Phi-4 replica deployment: one engine per Serve replica, concurrent requests batched together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from engine import Engine, EngineError, GenerationRequest, GenerationResult, LabelScores, StreamDelta
from serve.config import ServeConfig
from serve.metrics import ReplicaMetrics

_DONE = object()


@serve.deployment
class Phi4Replica:
    def __init__(self, config_json: str) -> None:
        self.config = ServeConfig.model_validate_json(config_json)
        self.engine = Engine(self.config.engine)
        # The engine is not thread-safe and its work is CPU/GPU-bound: one worker thread keeps the event loop
        # free to accept and batch requests while a batch runs.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.generate.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        self.generate.set_max_batch_size(self.engine.max_batch_size)
        self.metrics = ReplicaMetrics()
        self.inflight = 0  # generate_one calls in this replica
        self.in_batch = 0  # of those, in the engine batch now running
        self.running_streams = 0
        self.cancelled_streams = 0

    @property
    def waiting(self) -> int:
        return self.inflight - self.in_batch

    def _count(self, inflight: int = 0, in_batch: int | None = None) -> None:
        self.inflight += inflight
        self.in_batch = self.in_batch if in_batch is None else in_batch
        self.metrics.queue_depth.set(self.waiting)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult | EngineError]:
        """Concurrent callers' requests arrive here as one list and run as one engine batch."""
        self._count(in_batch=len(requests))
        self.metrics.batch_size.observe(len(requests))
        try:
            return await self._run(self.engine.generate, requests)
        except EngineError:  # isolate the bad request(s); the others still get their answer
            out: list[GenerationResult | EngineError] = []
            for r in requests:
                try:
                    out.extend(await self._run(self.engine.generate, [r]))
                except EngineError as exc:
                    out.append(exc)
            return out
        finally:
            self._count(in_batch=0)

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        self._count(inflight=1)
        try:
            result = await self.generate(request)
        finally:
            self._count(inflight=-1)
        if isinstance(result, EngineError):
            raise result
        return result

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Deltas as tokens are produced; when the caller goes away (the ingress cancels), the engine stops."""
        gen = self.engine.stream(request)
        self.running_streams += 1
        self.metrics.running_streams.set(self.running_streams)
        try:
            while True:
                delta = await self._run(next, gen, _DONE)
                if delta is _DONE:
                    return
                yield delta
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled_streams += 1
            self.metrics.cancelled.inc()
            raise
        finally:
            self.running_streams -= 1
            self.metrics.running_streams.set(self.running_streams)
            await asyncio.shield(self._run(gen.close))

    def stats(self) -> dict[str, int]:
        """This replica's counters (what its gauges export), for operators and tests over a handle."""
        return {
            "waiting": self.waiting,
            "running_streams": self.running_streams,
            "cancelled_streams": self.cancelled_streams,
        }

    async def score(self, prompts: list[str], labels: list[str]) -> list[LabelScores]:
        return await self._run(self.engine.score_labels, prompts, labels)

    def model_name(self) -> str:
        return self.engine.model_name

    def max_model_len(self) -> int:
        return self.engine.max_model_len
