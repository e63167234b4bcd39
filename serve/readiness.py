"""Whether a model replica answers, as the ingress last saw it: what /readyz reports and what gates first requests.

Every kubelet and load balancer in front of the endpoint polls /readyz; calling a replica per poll put probe
traffic in the engine's queue and made each poll wait up to the probe timeout behind a hung replica. Instead one
background task probes at most once per `interval_s`, with at most one probe in flight (callers that need an
answer meanwhile join it), and a real request a replica answered counts as a fresh success that puts off the next
probe. `probes` counts the replica calls made, so tests can show polls do not each make one.

Probes run in tasks with a context of their own: a task started inside a request inherits Serve's request context,
and Serve would then count its replica calls as that request's children and cancel them when that one client goes
away, failing the probe every other caller shares.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ray.serve.exceptions import BackPressureError

log = logging.getLogger(__name__)

#: Seconds between probes; /readyz is at most this stale (Kubernetes polls readiness every 10 s by default).
PROBE_INTERVAL_S = 5.0
T = TypeVar("T")


def _detached(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task outside any request's context (see the module docstring)."""
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


class Readiness:
    def __init__(self, probe: Callable[[], Any], timeout_s: float, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._probe = probe  # one replica call: an awaitable with .cancel() (a DeploymentResponse or a Task)
        self.timeout_s, self.interval_s = timeout_s, interval_s
        self.answered = False  # a replica has answered once: from then on requests queue through replacements
        self.error: str | None = None  # why no replica is ready, as of `checked_at`
        self.checked_at: float | None = None  # monotonic time of the last probe result or observed answer
        self.probes = 0
        self._inflight: asyncio.Task[str | None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background refresher (idempotent; needs the running event loop)."""
        if self._refresher is None:
            self._refresher = _detached(self._refresh())

    def observe_answer(self) -> None:
        """A replica answered a real request: as good as a probe, and the next probe waits."""
        self.answered, self.error, self.checked_at = True, None, time.monotonic()

    async def check(self) -> str | None:
        """A fresh probe's result (None: a replica answers, else why not); joins the probe in flight, if any."""
        if self._inflight is None or self._inflight.done():
            self._inflight = _detached(self._probe_once())
        return await asyncio.shield(self._inflight)

    async def current(self) -> str | None:
        """What /readyz reports: the last known state, waiting only for the very first probe."""
        self.start()
        if self.checked_at is None:
            return await self.check()
        return self.error

    async def _probe_once(self) -> str | None:
        self.probes += 1
        response = self._probe()
        error: str | None = None
        try:
            await asyncio.wait_for(asyncio.shield(response), timeout=self.timeout_s)
        except BackPressureError:  # replicas are up, just full
            pass
        except Exception as exc:
            response.cancel()
            detail = "still starting" if isinstance(exc, TimeoutError) else f"failing ({type(exc).__name__})"
            error = f"no model replica is ready yet: the deployment is {detail}"
        self.error, self.checked_at = error, time.monotonic()
        self.answered = self.answered or error is None
        return error

    async def _refresh(self) -> None:
        while True:
            due = self.checked_at is None or time.monotonic() - self.checked_at >= self.interval_s
            if due:
                try:
                    await self.check()
                except Exception:  # never let the refresher die: /readyz would freeze on a stale answer
                    log.exception("readiness probe failed unexpectedly")
            wait = self.interval_s - (time.monotonic() - (self.checked_at or time.monotonic()))
            await asyncio.sleep(max(wait, 0.05))
