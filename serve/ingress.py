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
from phifleet.engine import EngineError
from phifleet.engine.openai_api import (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    ChatCompletionRequest,
    error_body,
    generation_requests,
    parse_request,
    response_body,
)
from phifleet.engine.prompts import classification_prompt
from phifleet.serve.auth import authorized, load_api_keys
from phifleet.serve.config import ServeConfig
from phifleet.serve.metrics import IngressMetrics, RequestMetricsMiddleware
from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

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


class ClassifyRequest(BaseModel):
    """phifleet's own endpoint: label scoring over the given labels (no generation)."""

    model: str | None = None
    input: str | list[str]
    labels: list[str] = Field(min_length=2)
    instruction: str | None = None


def error(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(message, param, code)
    body["error"]["type"] = kind
    return JSONResponse(body, status_code=status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes and wrong methods answer in OpenAI's error shape too."""
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind=kind)


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
        self.keys = load_api_keys(self.config.api_keys_env, self.config.api_keys_file)
        self.ready = False  # set once a replica has answered; afterwards requests wait through replacements
        self.metrics = ingress_metrics()

    # --- helpers ---------------------------------------------------------------------------
    def _auth_error(self, request: Request) -> JSONResponse | None:
        if authorized(request.headers.get("authorization"), self.keys):
            return None
        return error(
            401,
            "Incorrect or missing API key: pass it as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            kind="authentication_error",
        )

    def _model_error(self, model: str | None) -> JSONResponse | None:
        if model is None or model == self.model_name:
            return None
        return error(
            404,
            f"The model '{model}' does not exist; this endpoint serves '{self.model_name}'",
            param="model",
            code="model_not_found",
        )

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
            await asyncio.wait_for(asyncio.shield(probe), timeout=self.config.ready_timeout_s)
        except BackPressureError:  # replicas are up, just full: the request itself will get its 429
            return None
        except Exception as exc:
            probe.cancel()
            detail = "still starting" if isinstance(exc, TimeoutError) else f"failing ({type(exc).__name__})"
            return error(
                503,
                f"no model replica is ready yet: the deployment is {detail}",
                kind="service_unavailable",
                headers={"Retry-After": "5"},
            )
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
        except EngineError as exc:
            return error(400, exc.message, exc.param)
        if (err := self._model_error(parsed.model)) is not None:
            return err
        if (err := await self._readiness_error()) is not None:
            return err
        gens = generation_requests(parsed)
        if parsed.stream:
            return await self._stream(parsed, gens, url, time.perf_counter())
        results = await asyncio.gather(*(self.replica.generate_one.remote(g) for g in gens), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                return self._failure(r)
        self.metrics.tokens(url, results[0].prompt_tokens, sum(r.completion_tokens for r in results))
        return JSONResponse(response_body(parsed, list(results), self.model_name))

    def _failure(self, exc: BaseException) -> JSONResponse:
        cause = getattr(exc, "cause", None) or exc  # Ray wraps a replica's exception; .cause is the original
        if isinstance(cause, EngineError):
            return error(400, cause.message, cause.param)
        if isinstance(cause, BackPressureError):  # max_queued_requests reached: shed load, tell clients when to retry
            return error(
                429,
                "the model is overloaded: too many queued requests, retry shortly",
                code="rate_limit_exceeded",
                kind="rate_limit_error",
                headers={"Retry-After": "1"},
            )
        if isinstance(cause, DeploymentUnavailableError):
            return error(
                503, "no model replica is available yet", kind="service_unavailable", headers={"Retry-After": "5"}
            )
        request_id = uuid.uuid4().hex
        log.exception("request %s failed", request_id, exc_info=exc)
        return error(500, f"the model replica failed (request id {request_id})", kind="server_error")

    async def _stream(self, parsed, gens, url: str, started: float) -> StreamingResponse | JSONResponse:
        chat = isinstance(parsed, ChatCompletionRequest)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        include_usage = bool((parsed.stream_options or {}).get("include_usage"))
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

        def chunk(index: int, text: str | None, finish: str | None) -> str:
            if chat:
                delta = {"content": text} if text is not None else {}
                choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
                obj = "text_completion"
            payload = {"id": rid, "object": obj, "created": created, "model": self.model_name, "choices": [choice]}
            return f"data: {json.dumps(payload)}\n\n"

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
                if chat:
                    role = {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    yield (
                        "data: "
                        + json.dumps(
                            {
                                "id": rid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": self.model_name,
                                "choices": [role],
                            }
                        )
                        + "\n\n"
                    )
                delta = first
                while delta is not None:
                    if delta.text:
                        if first_token:
                            first_token = False
                            self.metrics.ttft.observe(time.perf_counter() - started, tags={"route": url})
                        yield chunk(i, delta.text, None)
                    if delta.finish_reason:
                        yield chunk(i, None, delta.finish_reason)
                        prompt_tokens = delta.prompt_tokens
                        completion_tokens += delta.completion_tokens
                    try:
                        delta = await s.__anext__()
                    except StopAsyncIteration:
                        delta = None
            self.metrics.tokens(url, prompt_tokens, completion_tokens)
            if include_usage:
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
                obj = "chat.completion.chunk" if chat else "text_completion"
                yield (
                    "data: "
                    + json.dumps(
                        {
                            "id": rid,
                            "object": obj,
                            "created": created,
                            "model": self.model_name,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                    + "\n\n"
                )
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/classify")
    async def classify(self, request: Request) -> JSONResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        try:
            req = ClassifyRequest.model_validate(await self._json(request))
        except ValidationError as exc:
            e = exc.errors()[0]
            param = ".".join(str(p) for p in e["loc"]) or None
            return error(400, f"{param}: {e['msg']}" if param else e["msg"], param)
        if (err := self._model_error(req.model)) is not None:
            return err
        if (err := await self._readiness_error()) is not None:
            return err
        texts = [req.input] if isinstance(req.input, str) else req.input
        prompts = [classification_prompt(t, req.labels, req.instruction) for t in texts]
        try:
            scores = await self.replica.score.remote(prompts, req.labels)
        except Exception as exc:
            return self._failure(exc)
        data = [
            {"index": i, "label": s.label, "scores": s.probabilities, "logprobs": s.logprobs}
            for i, s in enumerate(scores)
        ]
        usage = {"prompt_tokens": sum(s.prompt_tokens for s in scores)}
        self.metrics.tokens("/v1/classify", usage["prompt_tokens"], 0)
        return JSONResponse({"object": "list", "model": self.model_name, "data": data, "usage": usage})
