"""The serving configuration: one pydantic model behind `phifleet serve`, `phifleet.serve.app:build_app` args
(what a KubeRay RayService's serveConfigV2 passes) and the Helm chart's values.
"""

from __future__ import annotations

from typing import Literal

from phifleet.engine.config import EngineConfig
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Environment of every Ray process phifleet serves from: `phifleet serve` sets it before starting Ray and the
#: Helm chart puts it on the head and worker containers. Ray Serve's throughput mode runs user code on the
#: replica's own event loop, routes on the caller's loop and talks gRPC between deployments (fewer thread hops per
#: request; on 2 cores, bench/serve_cpu.py measures 0.84-1.03x at concurrency 32 since the replica's batcher, 1.13x
#: before it). Its experimental direct ingress stays off: it serves HTTP from
#: ingress replicas on ports 30000-31000 (not the Service's 8000) and holds every app deletion for a 30 s drain.
SERVE_RAY_ENV: dict[str, str] = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}


class AutoscalingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0, description="0 allows scale-to-zero (cold starts load the model).")
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=16, gt=0, description="Per replica; more scales up.")
    upscale_delay_s: float = Field(default=10, ge=0)
    downscale_delay_s: float = Field(default=120, ge=0, description="Long enough not to drop a loaded replica.")
    look_back_period_s: float = Field(
        default=30, gt=0, description="Window the ongoing-request average is taken over; shorter reacts faster."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(default_factory=EngineConfig)
    model_name: str | None = Field(
        default=None, description="The id clients pass as `model`; defaults to the model directory's name."
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
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
            "While requests overlap, how long a free engine waits for more to fill its next batch; a lone "
            "request never waits."
        ),
    )
    ready_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Until a replica has first answered, requests wait this long for one, then get 503 + Retry-After.",
    )
    access_log: bool = Field(
        default=True, description="Serve's per-request access log lines; off saves CPU per request on small hosts."
    )
    api_keys_env: str = Field(default="PHIFLEET_API_KEYS", description="Env var with comma-separated API keys.")
    api_keys_file: str | None = Field(default=None, description="A mounted secret file, one key per line.")
