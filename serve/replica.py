"""The Phi-4 replica deployment: one engine per Serve replica, concurrent requests batched together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from phifleet.engine import Engine, GenerationRequest, GenerationResult, LabelScores, StreamDelta
from phifleet.engine.driver import EngineDriver
from phifleet.engine.sequence import Sequence
from phifleet.serve.batching import Batcher
from phifleet.serve.config import ServeConfig
from phifleet.serve.metrics import ReplicaMetrics

log = logging.getLogger(__name__)


class _Call:
    """One non-streaming request, tokenized: its answer (or error) arrives on ``future``."""

    kind = "generate"

    def __init__(self, request: GenerationRequest, seq: Sequence) -> None:
        self.request, self.seq = request, seq
        self.future: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()

    @property
    def dropped(self) -> bool:
        return self.future.done()  # cancelled: the caller went away


class _Stream:
    """One streaming request between the replica's event loop and the engine thread."""

    kind = "stream"

    def __init__(self, request: GenerationRequest, seq: Sequence) -> None:
        self.request, self.seq = request, seq
        self.queue: asyncio.Queue[StreamDelta | BaseException] = asyncio.Queue()
        self.ended = asyncio.Event()  # the last delta (or the error) is queued: no chunk waits out its interval
        self.cancelled = False

    @property
    def dropped(self) -> bool:
        return self.cancelled

    def put(self, item: StreamDelta | BaseException) -> None:
        """On the event loop's thread."""
        self.queue.put_nowait(item)
        if isinstance(item, BaseException) or item.finish_reason is not None:
            self.ended.set()


def _merge(deltas: list[StreamDelta]) -> StreamDelta:
    """Deltas that piled up while the caller was busy travel as one (fewer Ray stream items under load)."""
    last = deltas[-1]
    logprobs = None if last.logprobs is None else tuple(e for d in deltas for e in d.logprobs or ())
    text = "".join(d.text for d in deltas)
    return StreamDelta(text, last.finish_reason, last.prompt_tokens, last.completion_tokens, logprobs)


def _settle(future: asyncio.Future, result: object, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _to_stream(st: _Stream) -> Callable[[StreamDelta | BaseException], None]:
    """A driver listener that hands each item to a stream on the replica's event loop."""
    loop = asyncio.get_running_loop()
    return lambda item: loop.call_soon_threadsafe(st.put, item)


@serve.deployment
class Phi4Replica:
    def __init__(self, config_json: str) -> None:
        self.config = ServeConfig.model_validate_json(config_json)
        self.engine = Engine(self.config.engine)
        # Continuous batching: requests are handed to the engine's own loop (on its thread) and join the running
        # batch at its next step; the batcher below is the static engine's way of forming batches.
        self.metrics = ReplicaMetrics()
        self.driver = (
            EngineDriver(self.engine, on_step=self.metrics.batch_size.observe)
            if self.engine.batching == "continuous"
            else None
        )
        # The engine is not thread-safe and its work is CPU/GPU-bound: one worker thread keeps the event loop
        # free to accept requests, which wait in the batcher for the engine's next batch.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        # Requests are validated and tokenized on a thread of their own before they queue: a long prompt is
        # tokenized beside the engine's decoding, never inside its loop (where it stalled every other request).
        self._tokenize_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self._batcher: Batcher[_Call | _Stream] = Batcher(
            self._run_batch, self.engine.max_batch_size, self.config.deployment.batch_wait_timeout_s
        )
        self.running_streams = 0
        self.cancelled_streams = 0

    @property
    def waiting(self) -> int:
        """Requests in this replica not yet in an engine batch: generate calls and streams alike."""
        return self.driver.waiting if self.driver is not None else self._batcher.waiting

    def _submit(self, work: _Call | _Stream) -> None:
        self._batcher.submit(work)
        self.metrics.queue_depth.set(self.waiting)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _prepare(self, request: GenerationRequest) -> Sequence:
        """Validate and tokenize off the engine thread; a client error raises here, before the request queues."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, self.engine.prepare, request)

    async def _run_batch(self, kind: str, batch: list) -> None:
        self.metrics.queue_depth.set(self.waiting)
        self.metrics.batch_size.observe(len(batch))
        if kind == "stream":
            await self._stream_batch(batch)
        else:
            await self._generate_batch(batch)

    async def _generate_batch(self, batch: list[_Call]) -> None:
        try:
            results = await self._run(self._generate_isolated, batch)
        except Exception as exc:  # not even one by one: every caller gets the error
            results = [exc] * len(batch)
        for call, result in zip(batch, results, strict=True):
            if call.future.done():
                continue
            if isinstance(result, BaseException):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    def _generate_isolated(self, batch: list[_Call]) -> list[GenerationResult | Exception]:
        """One engine batch: a request that fails (of whatever exception) fails alone and the others get their
        answer; if the batch as a whole breaks, each request is run again by itself from its request."""
        try:
            return self.engine.generate_each([c.seq for c in batch])
        except Exception:
            log.exception("a batch of %d failed as a whole; running its requests one by one", len(batch))
            out: list[GenerationResult | Exception] = []
            for call in batch:
                try:
                    out.extend(self.engine.generate_each([call.request]))
                except Exception as exc:
                    out.append(exc)
            return out

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        if self.driver is not None:
            return await self._generate_continuous(await self._prepare(request))
        call = _Call(request, await self._prepare(request))
        self._submit(call)
        return await call.future  # cancelling this call (the caller went away) drops it from the queue

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Deltas as tokens are produced. Concurrent streams run as one engine batch (gathered like `generate`'s);
        when the caller goes away (the ingress cancels), this request leaves the batch at the next step."""
        st = _Stream(request, await self._prepare(request))
        if self.driver is not None:
            self.driver.submit(st.seq, _to_stream(st), "stream")
            self.metrics.queue_depth.set(self.waiting)
        else:
            self._submit(st)
        self.running_streams += 1
        self.metrics.running_streams.set(self.running_streams)
        interval = self.config.deployment.stream_interval_s
        loop = asyncio.get_running_loop()
        last_sent = -interval  # the first delta goes at once
        try:
            while True:
                items = [await st.queue.get()]
                wait = last_sent + interval - loop.time()
                final = isinstance(items[0], BaseException) or items[0].finish_reason is not None
                if wait > 0 and not final:  # let the next steps' tokens join this chunk, but not wait past the last
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await st.ended.wait()
                while not st.queue.empty():
                    items.append(st.queue.get_nowait())
                last_sent = loop.time()
                for item in items:
                    if isinstance(item, BaseException):
                        raise item
                delta = _merge(items)  # type: ignore[arg-type]
                yield delta
                if delta.finish_reason:
                    return
        except (GeneratorExit, asyncio.CancelledError):
            st.cancelled = True
            st.seq.cancel()  # continuous batching: it leaves the running batch at the next step
            self.cancelled_streams += 1
            self.metrics.cancelled.inc()
            raise
        finally:
            st.cancelled = True  # also after an error: nothing more is read from its queue
            st.seq.cancel()  # continuous batching: however the stream ended, it generates no further
            self.running_streams -= 1
            self.metrics.running_streams.set(self.running_streams)

    async def _stream_batch(self, batch: list[_Stream]) -> None:
        loop = asyncio.get_running_loop()

        def run() -> None:
            items = self.engine.stream_batch([st.seq for st in batch], cancelled=lambda i: batch[i].cancelled)
            for i, item in items:
                loop.call_soon_threadsafe(batch[i].put, item)

        try:
            await self._run(run)
        except Exception as exc:  # the engine failed under the whole batch: every stream gets the error
            for st in batch:
                st.put(exc)

    async def _generate_continuous(self, seq: Sequence) -> GenerationResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GenerationResult] = loop.create_future()

        def listener(item: StreamDelta | BaseException) -> None:  # on the engine thread
            if isinstance(item, BaseException):
                loop.call_soon_threadsafe(_settle, future, None, item)
            elif item.finish_reason is not None:
                try:
                    loop.call_soon_threadsafe(_settle, future, seq.result(), None)
                except Exception as exc:
                    loop.call_soon_threadsafe(_settle, future, None, exc)

        assert self.driver is not None
        self.driver.submit(seq, listener, "generate")
        self.metrics.queue_depth.set(self.waiting)
        try:
            return await future
        except asyncio.CancelledError:
            seq.cancel()  # the caller went away: the request leaves the batch at the next step
            raise

    def stats(self) -> dict[str, int]:
        """This replica's counters (what its gauges export), for operators and tests over a handle."""
        stats = {
            "waiting": self.waiting,
            "running_streams": self.running_streams,
            "cancelled_streams": self.cancelled_streams,
        }
        if self.driver is not None:
            # Continuous batching: a "batch" is an engine step; rows / batches is the mean requests per step.
            st = self.driver.stats
            for kind in ("generate", "stream"):
                stats[f"largest_{kind}_batch"] = st.largest_kind_step.get(kind, 0)
                stats[f"{kind}_batches"] = st.kind_steps.get(kind, 0)
                stats[f"{kind}_rows"] = st.kind_rows.get(kind, 0)
                stats[f"{kind}_requests_batched"] = st.submitted.get(kind, 0)
            return stats
        for kind in ("generate", "stream"):  # mean batch size = requests_batched / batches
            stats[f"largest_{kind}_batch"] = self._batcher.largest_batch.get(kind, 0)
            stats[f"{kind}_batches"] = self._batcher.batches.get(kind, 0)
            stats[f"{kind}_requests_batched"] = self._batcher.batched.get(kind, 0)
        return stats

    async def score(self, prompts: list[str], labels: list[str]) -> list[LabelScores]:
        if self.driver is not None:  # between two steps of the loop, on its thread
            return await asyncio.wrap_future(self.driver.call(lambda: self.engine.score_labels(prompts, labels)))
        return await self._run(self.engine.score_labels, prompts, labels)

    def model_name(self) -> str:
        return self.engine.model_name

    def max_model_len(self) -> int:
        return self.engine.max_model_len
