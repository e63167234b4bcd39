"""Starting the serve app on a real local Serve, on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def generates(client: Any, n: int) -> bool:
    """Whether the endpoint answers a completion of exactly ``n`` tokens (ignore_eos: whatever the toy model says)."""
    out = client.completions.create(model="phi4-tiny", prompt="Hello", max_tokens=n, extra_body={"ignore_eos": True})
    return out.usage.completion_tokens == n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(name: str, config: dict[str, Any], more: dict[str, dict[str, Any]] | None = None) -> Iterator[str]:
    """`phifleet.serve.app:build_app(config)` served under `name`; yields its base URL; deletes it and stops Serve.

    Serve's proxy gets the config's http.keep_alive_timeout_s, as `phifleet serve` and the chart give it. Apps in
    `more` (name -> config) run beside it on the same Serve, each at route prefix `/<name>`.
    """
    from ray import serve
    from ray.serve.api import RunTarget

    from phifleet.serve.app import build_app
    from phifleet.serve.config import ServeConfig

    port = free_port()
    keep_alive = ServeConfig.model_validate(config).http.keep_alive_timeout_s
    serve.start(http_options={"host": "127.0.0.1", "port": port, "keep_alive_timeout_s": keep_alive})
    targets = [RunTarget(build_app(config), name=name, route_prefix="/")]
    targets += [RunTarget(build_app(c), name=n, route_prefix=f"/{n}") for n, c in (more or {}).items()]
    serve.run_many(targets)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for target in targets:
            serve.delete(target.name)
        serve.shutdown()
