"""`phifleet.serve.app:build_app` — the import path a KubeRay RayService's serveConfigV2 (and `phifleet serve`) runs."""

from __future__ import annotations

from typing import Any

from phifleet.engine.loading import served_model_name
from phifleet.serve.config import ServeConfig
from phifleet.serve.ingress import OpenAIIngress
from phifleet.serve.replica import Phi4Replica
from ray.serve import Application


def served_name(config: ServeConfig) -> str:
    """The id clients pass as `model`: configured, or the model's directory name (phi4-tiny for the default)."""
    return config.model_name or served_model_name(config.engine)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the application from ServeConfig fields (Serve passes serveConfigV2's `args` here)."""
    config = ServeConfig.model_validate(args or {})
    name = served_name(config)
    config = config.model_copy(update={"engine": config.engine.model_copy(update={"served_model_name": name})})
    a = config.autoscaling
    logging = {"enable_access_log": config.access_log}
    autoscaling = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "look_back_period_s": a.look_back_period_s,
    }
    replica_options = {
        "autoscaling_config": autoscaling,
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "logging_config": logging,
    }
    if config.layout == "single":  # the ingress is the replica: it loads the engine and scales like one
        return OpenAIIngress.options(**replica_options).bind(None, config.model_dump_json(), name)
    replica = Phi4Replica.options(**replica_options).bind(config.model_dump_json())
    # The ingress only awaits replicas: let it hold every request the replicas may run or queue (Serve's
    # default of 5 would cap concurrency, and so batching, far below the replicas' own bound).
    ingress_limit = (config.max_ongoing_requests + max(config.max_queued_requests, 0)) * a.max_replicas
    return OpenAIIngress.options(
        ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=max(ingress_limit, 64), logging_config=logging
    ).bind(replica, config.model_dump_json(), name)
