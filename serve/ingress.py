"""The OpenAI-compatible HTTP front door (FastAPI on Ray Serve): auth, validation, OpenAI-shaped errors."""
# No `from __future__ import annotations` here: FastAPI must see real types in the route signatures.

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from phifleet.engine import GenerationRequest
from phifleet.protocol.classify import ClassifyRequest, ClassifyResponse
from phifleet.protocol.errors import OpenAIError, model_not_found, openai_error
from phifleet.protocol.requests import CHAT_COMPLETIONS, COMPLETIONS, GenerateRequest, parse_request
from phifleet.protocol.streaming import SSE_DONE, sse
from phifleet.serve.auth import authorized, load_api_keys
from phifleet.serve.config import ServeConfig
from phifleet.serve.metrics import IngressMetrics, RequestMetricsMiddleware

log = logging.getLogger(__name__)
app = FastAPI(title="phifleet", description="OpenAI-compatible Phi-4 serving on Ray Serve")
_metrics: IngressMetrics | None = None


def ingress_metrics() -> IngressMetrics:
    """One set per ingress process, made on first use (metrics objects belong to the process recording them)."""
    global _metrics
    if _metrics is None:
        _metrics = IngressMetrics()
    return _metrics


app.add_middleware(RequestMetricsMiddleware, get_metrics=ingress_metrics)


def error(err: OpenAIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes and wrong methods answer in OpenAI's error shape too."""
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error(OpenAIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", type=kind))


@serve.deployment
@serve.ingress(app)
class OpenAIIngress:
    def __init__(self, replica: DeploymentHandle | None, config_json: str, model_name: str) -> None:
        self.config = ServeConfig.model_validate_json(config_json)
        if replica is None:  # layout "single": this replica runs the engine itself
            from phifleet.serve.local_replica import LocalReplica
            from phifleet.serve.replica import Phi4Replica

            replica = LocalReplica(Phi4Replica.func_or_class(config_json))
        self.replica = replica
        self.model_name = model_name
        self.keys = load_api_keys(self.config.auth.api_keys_env, self.config.auth.api_keys_file)
        self.ready = False  # set once a replica has answered; afterwards requests wait through replacements
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

    async def _readiness_error(self) -> JSONResponse | None:
        """503 at once while no replica has loaded the model (starting, waiting for a GPU, or failed to deploy).

        Serve would otherwise queue the request until a replica appears: a hang for the client. Once a replica
        has answered, later requests queue through replica replacements and scale-from-zero instead.
        """
        if self.ready:
            return None
        if (err := await self._probe()) is not None:
            return err
        self.ready = True
        return None

    async def _probe(self) -> JSONResponse | None:
        probe = self.replica.model_name.remote()
        try:
            await asyncio.wait_for(asyncio.shield(probe), timeout=self.config.http.ready_timeout_s)
        except BackPressureError:  # replicas are up, just full: the request itself will get its 429
            return None
        except Exception as exc:
            probe.cancel()
            detail = "still starting" if isinstance(exc, TimeoutError) else f"failing ({type(exc).__name__})"
            message = f"no model replica is ready yet: the deployment is {detail}"
            return error(OpenAIError(503, message, type="service_unavailable"), headers={"Retry-After": "5"})
        return None

    @staticmethod
    async def _json(request: Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    # --- routes ----------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        if (err := await self._probe()) is not None:  # always a fresh answer from a replica
            return err
        return JSONResponse({"status": "ready", "model": self.model_name})

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
        body = await self._json(request)
        try:
            parsed = parse_request(url, body)
        except OpenAIError as exc:
            return error(exc)
        if (err := self._model_error(parsed.model)) is not None:
            return err
        if (err := await self._readiness_error()) is not None:
            return err
        gens = parsed.generation_requests()
        if parsed.stream:
            return await self._stream(parsed, gens, url, time.perf_counter())
        results = await asyncio.gather(*(self.replica.generate_one.remote(g) for g in gens), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                return self._failure(r)
        self.metrics.tokens(url, results[0].prompt_tokens, sum(r.completion_tokens for r in results))
        return JSONResponse(parsed.response(results, self.model_name).model_dump())

    def _failure(self, exc: BaseException) -> JSONResponse:
        cause = getattr(exc, "cause", None) or exc  # Ray wraps a replica's exception; .cause is the original
        if isinstance(cause, BackPressureError):  # max_queued_requests reached: shed load, tell clients when to retry
            message = "the model is overloaded: too many queued requests, retry shortly"
            overloaded = OpenAIError(429, message, code="rate_limit_exceeded", type="rate_limit_error")
            return error(overloaded, headers={"Retry-After": "1"})
        if isinstance(cause, DeploymentUnavailableError):
            unavailable = OpenAIError(503, "no model replica is available yet", type="service_unavailable")
            return error(unavailable, headers={"Retry-After": "5"})
        err = openai_error(cause)
        if err.status >= 500:
            request_id = uuid.uuid4().hex
            log.exception("request %s failed", request_id, exc_info=exc)
            message = f"the model replica failed: {err.message} (request id {request_id})"
            err = OpenAIError(err.status, message, type=err.type)
        return error(err)

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
                    if delta.text:
                        if first_token:
                            first_token = False
                            self.metrics.ttft.observe(time.perf_counter() - started, tags={"route": url})
                        yield sse(chunks.text(i, delta.text))
                    if delta.finish_reason:
                        yield sse(chunks.finish(i, delta.finish_reason))
                        prompt_tokens = delta.prompt_tokens
                        completion_tokens += delta.completion_tokens
                    try:
                        delta = await s.__anext__()
                    except StopAsyncIteration:
                        delta = None
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
        except ValidationError as exc:
            return error(openai_error(exc))
        if (err := self._model_error(req.model)) is not None:
            return err
        if (err := await self._readiness_error()) is not None:
            return err
        try:
            scores = await self.replica.score.remote(req.prompts(), req.labels)
        except Exception as exc:
            return self._failure(exc)
        answer = ClassifyResponse.from_scores(scores, self.model_name)
        self.metrics.tokens("/v1/classify", answer.usage.prompt_tokens, 0)
        return JSONResponse(answer.model_dump())
