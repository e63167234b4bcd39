"""`phifleet serve`: the serve app on a local (embedded or given) Ray until Ctrl-C.

The config is the --config file with the ServeConfig flags laid over it; the app is the same
`phifleet.serve.app:build_app` a RayService runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from typing import Any

from phifleet.cluster.flags import ConfigFlags, merge, widen_max_to_min


def serve_config(args: argparse.Namespace) -> Any:  # -> ServeConfig
    import yaml

    from phifleet.serve.config import ServeConfig

    base = (yaml.safe_load(args.config.read_text()) or {}) if args.config else {}
    flags = ConfigFlags.of(args)
    given = flags.values(args)
    widen_max_to_min(given.get("deployment", {}).get("autoscaling", {}))
    return flags.validate(ServeConfig, merge(base, given))


def _print_usage(url: str, name: str) -> None:
    print(f"phifleet is serving {name} at {url}/v1 (Ctrl-C stops it)")
    print(f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' -H 'Authorization: Bearer $KEY' \\")
    print(f'    -d \'{{"model": "{name}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'')
    print(
        f"  python -c \"import openai; c = openai.OpenAI(base_url='{url}/v1', api_key='KEY'); "
        f"print(c.chat.completions.create(model='{name}', messages=[{{'role': 'user', 'content': 'Hi'}}]))\"",
        flush=True,
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether a server listens on ``host:port`` already (Serve's proxy would fail later, in a traceback).

    SO_REUSEADDR, as uvicorn sets it: a port left in TIME_WAIT by a stopped server counts as free.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (what `docker stop`, systemd and Kubernetes send) both stop the server cleanly.

    Installed explicitly, after Ray's own SIGTERM handler: a shell that starts a program in the background without
    job control leaves SIGINT ignored, and Python then never raises KeyboardInterrupt (a fresh clone's test run
    started that way waited for Ctrl-C forever).
    """

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def serve(args: argparse.Namespace) -> int:
    config = serve_config(args)  # before importing Ray: a bad value fails at once
    if port_in_use(args.host, args.port):
        print(
            f"phifleet: error (--port): {args.host}:{args.port} is already in use; pick another --port", file=sys.stderr
        )
        return 2
    from ray import serve as ray_serve

    from phifleet.engine.loading import served_model_name
    from phifleet.jobs.pipeline import init_ray
    from phifleet.serve.app import build_app
    from phifleet.serve.config import SERVE_RAY_ENV

    for key, value in SERVE_RAY_ENV.items():  # reaches the embedded Ray's processes; a cluster has its own
        os.environ.setdefault(key, value)
    init_ray(args.address)
    _stop_on_signals()
    url = f"http://{args.host}:{args.port}"
    try:  # Ctrl-C at any point, even while deploying, shuts down cleanly
        keep_alive = config.http.keep_alive_timeout_s  # idle connections; the ingress bounds the rest
        ray_serve.start(http_options={"host": args.host, "port": args.port, "keep_alive_timeout_s": keep_alive})
        ray_serve.run(build_app(config.model_dump(mode="json")), name="phifleet", route_prefix="/")
        _print_usage(url, served_model_name(config.engine))
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("shutting down", flush=True)
    finally:
        ray_serve.shutdown()
    return 0
