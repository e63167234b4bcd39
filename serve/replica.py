"""The Phi-4 replica deployment: one engine per Serve replica, concurrent requests batched together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from engine import Engine, EngineError, GenerationRequest, GenerationResult, LabelScores, StreamDelta
from serve.config import ServeConfig
from serve.metrics import ReplicaMetrics


class _Stream:
    """One streaming request between the replica's event loop and the engine thread."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.queue: asyncio.Queue[StreamDelta | BaseException] = asyncio.Queue()
        self.cancelled = False


def _merge(deltas: list[StreamDelta]) -> StreamDelta:
    """Deltas that piled up while the caller was busy travel as one (fewer Ray stream items under load)."""
    last = deltas[-1]
    return StreamDelta("".join(d.text for d in deltas), last.finish_reason, last.prompt_tokens, last.completion_tokens)


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
        self._pending: list[_Stream] = []  # streams waiting for the next stream batch
        self._wake = asyncio.Event()
        self._stream_loop: asyncio.Task | None = None
        self.largest_stream_batch = 0

    @property
    def waiting(self) -> int:
        """Requests in this replica not yet in an engine batch: generate calls and streams alike."""
        return self.inflight - self.in_batch + len(self._pending)

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
        """Deltas as tokens are produced. Concurrent streams run as one engine batch (gathered like `generate`'s);
        when the caller goes away (the ingress cancels), this request leaves the batch at the next step."""
        st = _Stream(request)
        self._pending.append(st)
        self._count()
        self._wake.set()
        if self._stream_loop is None or self._stream_loop.done():
            self._stream_loop = asyncio.get_running_loop().create_task(self._run_stream_batches())
        self.running_streams += 1
        self.metrics.running_streams.set(self.running_streams)
        try:
            while True:
                items = [await st.queue.get()]
                while not st.queue.empty():
                    items.append(st.queue.get_nowait())
                for item in items:
                    if isinstance(item, BaseException):
                        raise item
                delta = _merge(items)  # type: ignore[arg-type]
                yield delta
                if delta.finish_reason:
                    return
        except (GeneratorExit, asyncio.CancelledError):
            st.cancelled = True
            self.cancelled_streams += 1
            self.metrics.cancelled.inc()
            raise
        finally:
            st.cancelled = True  # also after an error: nothing more is read from its queue
            self.running_streams -= 1
            self.metrics.running_streams.set(self.running_streams)

    async def _run_stream_batches(self) -> None:
        """Take the waiting streams (after a short gathering wait) and stream them as one batch, repeatedly."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.config.batch_wait_timeout_s)
            batch = [st for st in self._pending[: self.engine.max_batch_size] if not st.cancelled]
            del self._pending[: self.engine.max_batch_size]
            if self._pending:
                self._wake.set()
            self._count()
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            self.largest_stream_batch = max(self.largest_stream_batch, len(batch))

            def run(batch: list[_Stream] = batch) -> None:
                items = self.engine.stream_batch([st.request for st in batch], cancelled=lambda i: batch[i].cancelled)
                for i, item in items:
                    loop.call_soon_threadsafe(batch[i].queue.put_nowait, item)

            try:
                await self._run(run)
            except Exception as exc:  # the engine failed under the whole batch: every stream gets the error
                for st in batch:
                    st.queue.put_nowait(exc)

    def stats(self) -> dict[str, int]:
        """This replica's counters (what its gauges export), for operators and tests over a handle."""
        return {
            "waiting": self.waiting,
            "running_streams": self.running_streams,
            "cancelled_streams": self.cancelled_streams,
            "largest_stream_batch": self.largest_stream_batch,
        }

    async def score(self, prompts: list[str], labels: list[str]) -> list[LabelScores]:
        return await self._run(self.engine.score_labels, prompts, labels)

    def model_name(self) -> str:
        return self.engine.model_name

    def max_model_len(self) -> int:
        return self.engine.max_model_len
