"""Prometheus metrics of the endpoint, exported through Ray's metrics agent (the `/metrics` port Ray serves on
every node, which KubeRay's PodMonitor/ServiceMonitor scrape). Names appear with Ray's `ray_` prefix; Serve adds
`deployment`, `replica` and `application` tags. Objects are created inside the replica process that records them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ray.serve import metrics

# Seconds: from a one-token classify on a small model to a long generation on a loaded GPU.
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/classify", "/v1/models", "/healthz", "/readyz"})


class IngressMetrics:
    """What the HTTP front door sees: requests by route and status, latency to the last byte, TTFT, tokens."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "phifleet_requests_total", description="HTTP requests by route and status.", tag_keys=("route", "status")
        )
        self.latency = metrics.Histogram(
            "phifleet_request_latency_seconds",
            description="Time from request to the last response byte.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("route",),
        )
        self.ttft = metrics.Histogram(
            "phifleet_time_to_first_token_seconds",
            description="Streaming requests: time from request to the first generated text.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("route",),
        )
        self.prompt_tokens = metrics.Counter(
            "phifleet_prompt_tokens_total", description="Prompt tokens of answered requests.", tag_keys=("route",)
        )
        self.generated_tokens = metrics.Counter(
            "phifleet_generated_tokens_total", description="Completion tokens generated.", tag_keys=("route",)
        )

    def tokens(self, route: str, prompt: int, completion: int) -> None:
        if prompt:
            self.prompt_tokens.inc(prompt, tags={"route": route})
        if completion:
            self.generated_tokens.inc(completion, tags={"route": route})


class ReplicaMetrics:
    """What one engine replica sees: requests waiting for the engine and the batches it runs."""

    def __init__(self) -> None:
        self.queue_depth = metrics.Gauge(
            "phifleet_replica_queue_depth", description="Requests in this replica waiting for the engine."
        )
        self.running_streams = metrics.Gauge(
            "phifleet_replica_running_streams", description="Streaming generations in progress."
        )
        self.batch_size = metrics.Histogram(
            "phifleet_batch_size",
            description="Requests per engine batch (continuous batching: per engine step).",
            boundaries=BATCH_BUCKETS,
        )
        self.cancelled = metrics.Counter(
            "phifleet_cancelled_streams_total", description="Streams stopped because the client went away."
        )


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Scope]], Callable[[Scope], Awaitable[None]]], Awaitable[None]]


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would break disconnect propagation to streams).

    Counts each response by route and status and times it to its last body byte, so a stream's latency is the
    whole stream. Unknown paths are one `other` route to keep label cardinality bounded.
    """

    def __init__(self, app: ASGIApp, get_metrics: Callable[[], IngressMetrics]) -> None:
        self.app = app
        self.get_metrics = get_metrics

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope.get("path", "")
        route = route if route in ROUTES else "other"
        start = time.perf_counter()
        status = {"code": 500}
        finished = False

        def record() -> None:
            m = self.get_metrics()
            m.requests.inc(tags={"route": route, "status": str(status["code"])})
            m.latency.observe(time.perf_counter() - start, tags={"route": route})

        async def send_wrapper(message: Scope) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not finished:
                finished = True
                record()

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not finished:  # the client went away mid-response, or the app raised
                finished = True
                if status["code"] < 400:
                    status["code"] = 499  # nginx's "client closed request"
                record()
