"""The serving configuration: one pydantic model behind `phifleet serve`, `phifleet.serve.app:build_app` args
(what a KubeRay RayService's serveConfigV2 passes) and the Helm chart's `serve.config` values.

Sections mirror JobConfig's: `engine` (what runs), `deployment` (how Serve places and scales it), `http` (how
the endpoint answers) and `auth` (who may call it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from phifleet.engine.config import EngineConfig
from phifleet.protocol.limits import RequestLimits

#: Environment of every Ray process phifleet serves from: `phifleet serve` sets it before starting Ray and the
#: Helm chart puts it on the head and worker containers. Throughput mode runs user code on the replica's own
#: event loop and talks gRPC between deployments (fewer thread hops per request; bench/results/serve_cpu.md,
#: "Why the defaults"). Direct ingress stays off: it serves HTTP on ports 30000-31000 (not the Service's 8000)
#: and holds every app deletion for a 30 s drain.
SERVE_RAY_ENV: dict[str, str] = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(_Strict):
    """Serve's autoscaling of the engine deployment, by ongoing requests per replica."""

    min_replicas: int = Field(default=1, ge=0, description="0 allows scale-to-zero (cold starts load the model).")
    max_replicas: int = Field(default=1, ge=1, description="Upper bound; each replica holds one engine.")
    target_ongoing_requests: float = Field(default=16, gt=0, description="Per replica; more scales up.")
    upscale_delay_s: float = Field(default=10, ge=0, description="Seconds of overload before adding a replica.")
    downscale_delay_s: float = Field(default=120, ge=0, description="Long enough not to drop a loaded replica.")
    look_back_period_s: float = Field(
        default=30, gt=0, description="Window the ongoing-request average is taken over; shorter reacts faster."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class DeploymentConfig(_Strict):
    """Where the engine replicas run, how many, and how much each takes on."""

    layout: Literal["split", "single"] = Field(
        default="split",
        description=(
            "split: a FastAPI ingress deployment in front of the engine replicas (the ingress scales on CPU apart "
            "from the GPU replicas). single: each replica serves HTTP and runs the engine (one hop less per "
            "request: lower latency and CPU; autoscaling applies to that one deployment)."
        ),
    )
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (1 for Phi-4 at tp 1).")
    num_cpus: float = Field(default=0.5, gt=0, description="CPUs per replica; fractional on small machines.")
    max_ongoing_requests: int = Field(default=64, ge=1, description="Requests one replica works on at once.")
    max_queued_requests: int = Field(
        default=256, ge=-1, description="Requests waiting for a replica; beyond it clients get 429. -1: unbounded."
    )
    batch_wait_timeout_s: float = Field(
        default=0.01,
        ge=0,
        description=(
            "Static batching: while requests overlap, how long a free engine waits for more to fill its next "
            "batch; a lone request never waits."
        ),
    )
    stream_interval_s: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description=(
            "A stream's tokens travel to the client in chunks at most this often (the first token at once): every "
            "chunk is a Ray streaming item through the ingress and proxy, so per-token chunks cost more CPU than "
            "the tokens themselves on a busy replica (Ray Serve LLM's stream_batching_interval_ms). 0: per step."
        ),
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)


class HttpConfig(_Strict):
    """How the endpoint answers before and while replicas work, and what one HTTP request may take of it."""

    ready_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Until a replica has first answered, requests wait this long for one, then get 503 + Retry-After.",
    )
    access_log: bool = Field(
        default=True, description="Serve's per-request access log lines; off saves CPU per request on small hosts."
    )
    max_request_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest request body; beyond it 413 (refused from Content-Length before reading). Room for a prompt "
            "of limits.max_prompt_chars even JSON-escaped; raise both together."
        ),
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="All request header names and values together; beyond it 431.",
    )
    body_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "The whole body must arrive within this long, however it is split; else 408 and the connection is "
            "closed. Bounds how long a stalled or trickling upload holds an open-request slot."
        ),
    )
    keep_alive_timeout_s: int = Field(
        default=90,
        ge=1,
        description=(
            "Idle keep-alive connections are closed after this long (Serve's http_options.keep_alive_timeout_s). "
            "Keep it above the idle timeout of a load balancer in front (often 60 s)."
        ),
    )
    max_open_requests: int = Field(
        default=2048,
        ge=1,
        description=(
            "HTTP requests one ingress replica holds at once (Serve's max_ongoing_requests of the ingress): uploads "
            "in progress, requests waiting for or streaming from the engine. Cheap; keep it above what the engine "
            "admits, (max_ongoing_requests + max_queued_requests) x max_replicas, which answers 429 beyond."
        ),
    )
    openapi_docs: bool = Field(
        default=False,
        description="Serve /docs, /redoc and /openapi.json (behind the API key when keys are set); off: 404.",
    )


class AuthConfig(_Strict):
    """Bearer API keys; with none configured the endpoint is open (and says so in its log)."""

    api_keys_env: str = Field(default="PHIFLEET_API_KEYS", description="Env var with comma-separated API keys.")
    api_keys_file: str | None = Field(default=None, description="A mounted secret file, one key per line.")


#: Top-level keys of the flat ServeConfig of phifleet 0.1 and where each lives now: an old file fails naming it.
MOVED_KEYS = {
    "model_name": "engine.served_model_name",
    "layout": "deployment.layout",
    "num_gpus": "deployment.num_gpus",
    "num_cpus": "deployment.num_cpus",
    "max_ongoing_requests": "deployment.max_ongoing_requests",
    "max_queued_requests": "deployment.max_queued_requests",
    "batch_wait_timeout_s": "deployment.batch_wait_timeout_s",
    "autoscaling": "deployment.autoscaling",
    "ready_timeout_s": "http.ready_timeout_s",
    "access_log": "http.access_log",
    "api_keys_env": "auth.api_keys_env",
    "api_keys_file": "auth.api_keys_file",
}


class ServeConfig(_Strict):
    """One OpenAI-compatible app. The id clients pass as `model` is `engine.served_model_name`."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: RequestLimits = Field(default_factory=RequestLimits)

    @model_validator(mode="before")
    @classmethod
    def _name_moved_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            moved = [f"{key} is now {MOVED_KEYS[key]}" for key in data if key in MOVED_KEYS]
            if moved:
                raise ValueError("the serve config is nested since phifleet 0.2: " + "; ".join(moved))
        return data
