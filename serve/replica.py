"""The Phi-4 replica deployment: one engine per Serve replica, concurrent requests batched together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from engine import Engine, EngineError, GenerationRequest, GenerationResult, LabelScores, StreamDelta
from serve.config import ServeConfig

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

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult | EngineError]:
        """Concurrent callers' requests arrive here as one list and run as one engine batch."""
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

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        result = await self.generate(request)
        if isinstance(result, EngineError):
            raise result
        return result

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Deltas as tokens are produced; when the caller goes away, the generator is closed and stops."""
        gen = self.engine.stream(request)
        try:
            while True:
                delta = await self._run(next, gen, _DONE)
                if delta is _DONE:
                    return
                yield delta
        finally:
            await self._run(gen.close)

    async def score(self, prompts: list[str], labels: list[str]) -> list[LabelScores]:
        return await self._run(self.engine.score_labels, prompts, labels)

    def model_name(self) -> str:
        return self.engine.model_name

    def max_model_len(self) -> int:
        return self.engine.max_model_len
