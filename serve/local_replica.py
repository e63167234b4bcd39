"""The replica's methods called in-process, behind the same interface the ingress uses for a DeploymentHandle.

With `layout: single` each Serve replica serves HTTP and runs the engine itself: one hop (and one process)
less per request than ingress deployment -> replica deployment. Serve's slot count of that deployment is then the
open-request limit (http.max_open_requests: uploads and waiting clients are cheap), so the engine's own bound,
max_ongoing_requests + max_queued_requests, is kept here: an engine call beyond it fails with the same
BackPressureError a full replica deployment gives a handle, which the ingress answers 429 + Retry-After.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from ray.serve.exceptions import BackPressureError

#: The replica methods that queue engine work; the readiness probe (`model_name`) and `stats` are not admitted.
ENGINE_METHODS = frozenset({"generate_one", "stream", "score"})


class Admission:
    """Engine calls in flight in this replica, at most `limit` (None: unbounded, as max_queued_requests -1)."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.in_flight = limit, 0

    def enter(self) -> None:
        if self.limit is not None and self.in_flight >= self.limit:
            raise BackPressureError(self.in_flight, self.limit, status_code=429, retry_after_s=1)
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


class _Method:
    def __init__(self, fn: Callable[..., Any], stream: bool, admission: Admission | None) -> None:
        self.fn, self.stream, self.admission = fn, stream, admission

    def remote(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self.admission is not None:
            try:
                self.admission.enter()
            except BackPressureError as exc:  # fails when awaited, like a handle's response would
                if self.stream:
                    return LocalStream(_raise(exc))
                refused: asyncio.Future[Any] = loop.create_future()
                refused.set_exception(exc)
                return refused
        release = self.admission.leave if self.admission is not None else None
        if self.stream:
            return LocalStream(self.fn(*args), release)

        async def call() -> Any:
            out = self.fn(*args)
            return await out if asyncio.iscoroutine(out) else out

        task = loop.create_task(call())  # awaitable and cancellable, like a response
        if release is not None:
            task.add_done_callback(lambda _: release())  # also when cancelled before it ever ran
        return task


async def _raise(exc: BaseException) -> AsyncIterator[Any]:
    raise exc
    yield  # an async generator that fails on its first item


class LocalStream:
    """An async generator seen as a DeploymentResponseGenerator: `__anext__` and `cancel()`.

    `release` (the admission slot) is called once, when the stream ends, fails, is cancelled or is dropped.
    """

    def __init__(self, agen: AsyncIterator[Any], release: Callable[[], None] | None = None) -> None:
        self.agen = agen
        self._release = release

    def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.agen.__anext__()
        except BaseException:  # the end (StopAsyncIteration), an error, or cancellation
            self._done()
            raise

    def cancel(self) -> None:
        self._done()
        asyncio.get_running_loop().create_task(self.agen.aclose())  # raises GeneratorExit where it is suspended

    def __del__(self) -> None:  # never iterated to its end nor cancelled (the response was never started)
        self._done()


class LocalReplica:
    """`replica.method.remote(...)` and `replica.options(stream=True).method.remote(...)` on a local object."""

    def __init__(self, target: Any, stream: bool = False, admission: Admission | None = None) -> None:
        self._target, self._stream = target, stream
        self.admission = admission or Admission(None)

    def options(self, stream: bool = False) -> LocalReplica:
        return LocalReplica(self._target, stream, self.admission)

    def __getattr__(self, name: str) -> _Method:
        admission = self.admission if name in ENGINE_METHODS else None
        return _Method(getattr(self._target, name), self._stream, admission)
