"""The replica's methods called in-process, behind the same interface the ingress uses for a DeploymentHandle.

With `layout: single` each Serve replica serves HTTP and runs the engine itself: one hop (and one process)
less per request than ingress deployment -> replica deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any


class _Method:
    def __init__(self, fn: Callable[..., Any], stream: bool) -> None:
        self.fn, self.stream = fn, stream

    def remote(self, *args: Any) -> Any:
        if self.stream:
            return LocalStream(self.fn(*args))

        async def call() -> Any:
            out = self.fn(*args)
            return await out if asyncio.iscoroutine(out) else out

        return asyncio.get_running_loop().create_task(call())  # awaitable and cancellable, like a response


class LocalStream:
    """An async generator seen as a DeploymentResponseGenerator: `__anext__` and `cancel()`."""

    def __init__(self, agen: AsyncIterator[Any]) -> None:
        self.agen = agen

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> Any:
        return await self.agen.__anext__()

    def cancel(self) -> None:
        asyncio.get_running_loop().create_task(self.agen.aclose())  # raises GeneratorExit where it is suspended


class LocalReplica:
    """`replica.method.remote(...)` and `replica.options(stream=True).method.remote(...)` on a local object."""

    def __init__(self, target: Any, stream: bool = False) -> None:
        self._target, self._stream = target, stream

    def options(self, stream: bool = False) -> LocalReplica:
        return LocalReplica(self._target, stream)

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self._target, name), self._stream)
