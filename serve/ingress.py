"""The OpenAI-compatible HTTP front door (FastAPI on Ray Serve): auth, validation, OpenAI-shaped errors.

Every answer that is not a success is OpenAI's error JSON, whatever failed: limits on the request itself
(serve/limits.py, before routing), unknown routes, client mistakes, and any exception a route did not expect (a 500
with a request id; the traceback goes to the log only). Docs routes are off unless `http.openapi_docs`.
"""
# No `from __future__ import annotations` here: FastAPI must see real types in the route signatures.

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from phifleet.engine import GenerationRequest
from phifleet.protocol.classify import ClassifyRequest, ClassifyResponse
from phifleet.protocol.errors import OpenAIError, model_not_found, openai_error
from phifleet.protocol.requests import CHAT_COMPLETIONS, COMPLETIONS, GenerateRequest, parse_request
from phifleet.protocol.streaming import SSE_DONE, sse, sse_error
from phifleet.serve.auth import authorized, load_api_keys
from phifleet.serve.config import ServeConfig
from phifleet.serve.limits import HttpLimits, LimitsMiddleware, activate, parse_json_body
from phifleet.serve.local_replica import Admission, LocalReplica
from phifleet.serve.metrics import IngressMetrics, RequestMetricsMiddleware
from phifleet.serve.readiness import Readiness

log = logging.getLogger(__name__)
# FastAPI's own docs routes are off: the ingress serves them itself, only when configured and behind the key.
app = FastAPI(
    title="phifleet",
    description="OpenAI-compatible Phi-4 serving on Ray Serve",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)
_metrics: IngressMetrics | None = None


def ingress_metrics() -> IngressMetrics:
    """One set per ingress process, made on first use (metrics objects belong to the process recording them)."""
    global _metrics
    if _metrics is None:
        _metrics = IngressMetrics()
    return _metrics


# Added first, so it runs inside the metrics middleware: its 408/413/431 answers are counted too.
app.add_middleware(LimitsMiddleware)
app.add_middleware(RequestMetricsMiddleware, get_metrics=ingress_metrics)


def error(err: OpenAIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes and wrong methods answer in OpenAI's error shape too."""
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error(OpenAIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", type=kind))


@app.exception_handler(Exception)
async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything a route did not expect (Starlette's ServerErrorMiddleware calls this): a 500 in OpenAI's shape with
    the request id Serve logs under (its x-request-id), the traceback in the log and never in the answer."""
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    log.error("request %s (%s %s) failed", request_id, request.method, request.url.path, exc_info=exc)
    return error(OpenAIError(500, f"internal server error (request id {request_id})", type="server_error"))


def unavailable(message: str) -> JSONResponse:
    return error(OpenAIError(503, message, type="service_unavailable"), headers={"Retry-After": "5"})


@serve.deployment
@serve.ingress(app)
class OpenAIIngress:
    def __init__(self, replica: DeploymentHandle | None, config_json: str, model_name: str) -> None:
        self.config = ServeConfig.model_validate_json(config_json)
        activate(HttpLimits.of(self.config.http))  # for LimitsMiddleware, in this process
        if replica is None:  # layout "single": this replica runs the engine itself
            from phifleet.serve.replica import Phi4Replica

            d = self.config.deployment  # Serve's slots count open HTTP requests here: bound engine work apart
            limit = d.max_ongoing_requests + d.max_queued_requests if d.max_queued_requests >= 0 else None
            replica = LocalReplica(Phi4Replica.func_or_class(config_json), admission=Admission(limit))
        self.replica = replica
        self.model_name = model_name
        self.keys = load_api_keys(self.config.auth.api_keys_env, self.config.auth.api_keys_file)
        # Started by the first request: the replica handle belongs to the event loop requests run on.
        self.readiness = Readiness(lambda: self.replica.model_name.remote(), self.config.http.ready_timeout_s)
        self.metrics = ingress_metrics()

    # --- helpers ---------------------------------------------------------------------------
    def _auth_error(self, request: Request) -> JSONResponse | None:
        if authorized(request.headers.get("authorization"), self.keys):
            return None
        return error(
            OpenAIError(
                401,
                "Incorrect or missing API key: pass it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                type="authentication_error",
            )
        )

    def _model_error(self, model: str | None) -> JSONResponse | None:
        if model is None or model == self.model_name:
            return None
        return error(model_not_found(model, self.model_name))

    def _docs_error(self, request: Request) -> JSONResponse | None:
        """Docs are a 404 like any unknown route unless `http.openapi_docs`; then they need the API key."""
        if not self.config.http.openapi_docs:
            raise StarletteHTTPException(404, "Not Found")
        return self._auth_error(request)

    async def _readiness_error(self) -> JSONResponse | None:
        """503 at once while no replica has loaded the model (starting, waiting for a GPU, or failed to deploy).

        Serve would otherwise queue the request until a replica appears: a hang for the client. Once a replica
        has answered, later requests queue through replica replacements and scale-from-zero instead. Requests
        arriving together share one probe.
        """
        self.readiness.start()
        if self.readiness.answered:
            return None
        if (detail := await self.readiness.check()) is not None:
            return unavailable(detail)
        return None

    async def _json(self, request: Request) -> Any:
        """The body (read under the HTTP limits by LimitsMiddleware) as JSON; a 400 naming `body` otherwise."""
        return parse_json_body(await request.body(), self.config.limits.max_json_depth)

    # --- routes ----------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """From the state the ingress keeps (serve/readiness.py), not a replica call per poll."""
        if (detail := await self.readiness.current()) is not None:
            return unavailable(detail)
        return JSONResponse({"status": "ready", "model": self.model_name})

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> JSONResponse:
        if (err := self._docs_error(request)) is not None:
            return err
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(self, request: Request) -> HTMLResponse:
        if (err := self._docs_error(request)) is not None:
            return err
        return get_swagger_ui_html(openapi_url=self._openapi_url(request), title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(self, request: Request) -> HTMLResponse:
        if (err := self._docs_error(request)) is not None:
            return err
        return get_redoc_html(openapi_url=self._openapi_url(request), title=f"{app.title} - ReDoc")

    @staticmethod
    def _openapi_url(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/") + "/openapi.json"

    def stats(self) -> dict[str, int]:
        """Counters for operators and tests over a handle: replica calls the readiness probe made, and (layout
        single) engine calls in flight in this replica."""
        stats = {"readiness_probes": self.readiness.probes}
        if isinstance(self.replica, LocalReplica):
            stats["engine_in_flight"] = self.replica.admission.in_flight
        return stats

    @app.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "phifleet"}
        return JSONResponse({"object": "list", "data": [model]})

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._complete(request, CHAT_COMPLETIONS)

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._complete(request, COMPLETIONS)

    async def _complete(self, request: Request, url: str):
        if (err := self._auth_error(request)) is not None:
            return err
        try:
            body = await self._json(request)
            parsed = parse_request(url, body, limits=self.config.limits)
            gens = parsed.generation_requests()
        except OpenAIError as exc:
            return error(exc)
        if (err := self._model_error(parsed.model)) is not None:
            return err
        if (err := await self._readiness_error()) is not None:
            return err
        if parsed.stream:
            return await self._stream(parsed, gens, url, time.perf_counter())
        results = await asyncio.gather(*(self.replica.generate_one.remote(g) for g in gens), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                return self._failure(r)
        self.readiness.observe_answer()
        self.metrics.tokens(url, results[0].prompt_tokens, sum(r.completion_tokens for r in results))
        return JSONResponse(parsed.response(results, self.model_name).model_dump())

    def _failure(self, exc: BaseException) -> JSONResponse:
        err = self._failure_error(exc)
        retry_after = {429: "1", 503: "5"}.get(err.status)  # shed load / no replica yet: when to come back
        return error(err, headers={"Retry-After": retry_after} if retry_after else None)

    def _failure_error(self, exc: BaseException) -> OpenAIError:
        """The client's view of a replica call's failure; a server-side one is logged under a request id."""
        cause = getattr(exc, "cause", None) or exc  # Ray wraps a replica's exception; .cause is the original
        if isinstance(cause, BackPressureError):  # max_queued_requests reached: shed load, tell clients when to retry
            message = "the model is overloaded: too many queued requests, retry shortly"
            return OpenAIError(429, message, code="rate_limit_exceeded", type="rate_limit_error")
        if isinstance(cause, DeploymentUnavailableError):
            return OpenAIError(503, "no model replica is available yet", type="service_unavailable")
        err = openai_error(cause)
        if err.status >= 500:
            request_id = uuid.uuid4().hex
            log.error("request %s failed", request_id, exc_info=exc)
            message = f"the model replica failed: {err.message} (request id {request_id})"
            err = OpenAIError(err.status, message, type=err.type)
        return err

    async def _stream(
        self, parsed: GenerateRequest, gens: list[GenerationRequest], url: str, started: float
    ) -> StreamingResponse | JSONResponse:
        chunks = parsed.chunk_stream(self.model_name)
        streams = [self.replica.options(stream=True).stream.remote(g) for g in gens]
        # The first delta of each choice surfaces validation errors (too long a prompt) as a 400, not a broken stream.
        firsts = []
        for s in streams:
            try:
                firsts.append(await s.__anext__())
            except StopAsyncIteration:
                firsts.append(None)
            except Exception as exc:
                for other in streams:
                    other.cancel()
                return self._failure(exc)
        self.readiness.observe_answer()

        async def events() -> AsyncIterator[str]:
            try:
                async for event in body():
                    yield event
            finally:  # also when the client disconnects: cancelling stops the replicas' generation
                for s in streams:
                    s.cancel()

        async def body() -> AsyncIterator[str]:
            prompt_tokens = completion_tokens = 0
            first_token = True
            for i, (first, s) in enumerate(zip(firsts, streams, strict=True)):
                if (role := chunks.role(i)) is not None:
                    yield sse(role)
                delta = first
                while delta is not None:
                    if delta.text or delta.logprobs:  # a token may hold half a character: logprobs, no text yet
                        if first_token and delta.text:
                            first_token = False
                            self.metrics.ttft.observe(time.perf_counter() - started, tags={"route": url})
                        yield sse(chunks.text(i, delta.text, logprobs=delta.logprobs))
                    if delta.finish_reason:
                        yield sse(chunks.finish(i, delta.finish_reason))
                        prompt_tokens = delta.prompt_tokens
                        completion_tokens += delta.completion_tokens
                    try:
                        delta = await s.__anext__()
                    except StopAsyncIteration:
                        delta = None
                    except Exception as exc:  # headers are sent: the error travels as the stream's last event
                        yield sse_error(self._failure_error(exc))
                        yield SSE_DONE
                        return
            self.metrics.tokens(url, prompt_tokens, completion_tokens)
            if parsed.include_usage:
                yield sse(chunks.usage(prompt_tokens, completion_tokens))
            yield SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/classify")
    async def classify(self, request: Request) -> JSONResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        try:
            req = ClassifyRequest.model_validate(await self._json(request))
        except (OpenAIError, ValidationError) as exc:
            return error(openai_error(exc))
        if (err := self._model_error(req.model)) is not None:
            return err
        if (err := await self._readiness_error()) is not None:
            return err
        try:
            scores = await self.replica.score.remote(req.prompts(), req.labels)
        except Exception as exc:
            return self._failure(exc)
        self.readiness.observe_answer()
        answer = ClassifyResponse.from_scores(scores, self.model_name)
        self.metrics.tokens("/v1/classify", answer.usage.prompt_tokens, 0)
        return JSONResponse(answer.model_dump())
