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
def running_app(name: str, config: dict[str, Any]) -> Iterator[str]:
    """`phifleet.serve.app:build_app(config)` served under `name`; yields its base URL; deletes it and stops Serve."""
    from ray import serve

    from phifleet.serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config), name=name, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(name)
        serve.shutdown()
