"""`phifleet.serve.app:build_app` — the import path a KubeRay RayService's serveConfigV2 (and `phifleet serve`) runs."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from phifleet.engine.loading import served_model_name
from phifleet.serve.config import ServeConfig
from phifleet.serve.ingress import OpenAIIngress
from phifleet.serve.replica import Phi4Replica


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the application from ServeConfig fields (Serve passes serveConfigV2's `args` here)."""
    config = ServeConfig.model_validate(args or {})
    name = served_model_name(config.engine)  # the id clients pass as `model`, decided as for jobs
    d, a = config.deployment, config.deployment.autoscaling
    logging = {"enable_access_log": config.http.access_log}
    replica_options = {
        "autoscaling_config": a.model_dump(),  # AutoscalingConfig's fields are Serve's own names
        "max_ongoing_requests": d.max_ongoing_requests,
        "max_queued_requests": d.max_queued_requests,
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        "logging_config": logging,
    }
    if d.layout == "single":  # the ingress is the replica: it loads the engine and scales like one
        return OpenAIIngress.options(**replica_options).bind(None, config.model_dump_json(), name)
    replica = Phi4Replica.options(**replica_options).bind(config.model_dump_json())
    # The ingress only awaits replicas: let it hold every request the replicas may run or queue (Serve's
    # default of 5 would cap concurrency, and so batching, far below the replicas' own bound).
    ingress_limit = (d.max_ongoing_requests + max(d.max_queued_requests, 0)) * a.max_replicas
    return OpenAIIngress.options(
        ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=max(ingress_limit, 64), logging_config=logging
    ).bind(replica, config.model_dump_json(), name)
