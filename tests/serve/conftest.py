"""Starting the serve app on a real local Serve, on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(name: str, config: dict[str, Any]) -> Iterator[str]:
    """`serve.app:build_app(config)` served under `name`; yields its base URL; deletes it and stops Serve."""
    from ray import serve

    from serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config), name=name, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(name)
        serve.shutdown()


HANDLE_LOOP = asyncio.new_event_loop()  # Serve's throughput mode routes a handle's calls on the caller's loop


def replica_stats(app_name: str = "phifleet") -> dict[str, int]:
    """The app's replica's `stats()` over a Serve handle, always from the same event loop (handles bind to it)."""
    from ray import serve

    async def ask() -> dict[str, int]:
        return await serve.get_deployment_handle("Phi4Replica", app_name=app_name).stats.remote()

    return HANDLE_LOOP.run_until_complete(asyncio.wait_for(ask(), timeout=30))
