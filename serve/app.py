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
    # The ingress's Serve slots are open HTTP requests (cheap; uploads in progress hold one until
    # http.body_read_timeout_s at most), not engine work: that is bounded by the replicas' max_ongoing_requests +
    # max_queued_requests, with 429s beyond. So a slow or stalled client cannot take capacity others need.
    open_requests = {"max_ongoing_requests": config.http.max_open_requests, "logging_config": logging}
    if d.layout == "single":  # the ingress is the replica: it loads the engine (bounded by LocalReplica's Admission)
        options = {**replica_options, **open_requests}
        del options["max_queued_requests"]  # Serve's default: only requests past max_open_requests wait for a slot
        return OpenAIIngress.options(**options).bind(None, config.model_dump_json(), name)
    replica = Phi4Replica.options(**replica_options).bind(config.model_dump_json())
    return OpenAIIngress.options(ray_actor_options={"num_cpus": 0.1}, **open_requests).bind(
        replica, config.model_dump_json(), name
    )
