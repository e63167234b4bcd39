"""Shared fixtures: one thread for torch (2 threads on 2 cores is 10-40x slower), the shipped tiny model."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from tests.ray_processes import kill_session_processes

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir():
    """The phi4-tiny model shipped in the package (engine/tiny/phi4-tiny-v*/): nothing is built."""
    from phifleet.engine.tiny.build import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def engine(tiny_dir):
    """The default replica: DeepSpeed-prepared, continuous batching over the paged KV pool."""
    from phifleet.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(model=str(tiny_dir)))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def static_engine(tiny_dir):
    """Length-bucketed static batches: the path the continuous loop is compared with."""
    from phifleet.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(model=str(tiny_dir), batching="static"))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_dir):
    from phifleet.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(model=str(tiny_dir), backend="hf"))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def continuous_engine(tiny_dir):
    from phifleet.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(model=str(tiny_dir), batching="continuous"))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def ray_local(tiny_dir):
    """One local Ray for the in-process job and serve tests; yields its Prometheus `/metrics` URL.

    Metrics are reported every second (Ray's default is 10 s) so tests can read what they just caused.
    """
    import ray

    from phifleet.serve.config import SERVE_RAY_ENV

    for key, value in SERVE_RAY_ENV.items():  # what `phifleet serve` and the chart run with
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests only
    metrics_port = start_local_ray(attempts=3)
    yield f"http://127.0.0.1:{metrics_port}/metrics"
    ray.shutdown()


def start_local_ray(attempts: int) -> int:
    """`ray.init` for the tests, retried: returns the metrics export port.

    Ray gives its raylet a hard-coded 30 s to register (ray/_private/node.py), and the raylet registers only after
    its dashboard agent (a Python process importing aiohttp, grpc, opentelemetry) is up. A CI run once missed that on
    a busy 2-core machine and every Ray test of the session errored. A failed start prints the tails of the raylet's
    and agent's logs (why it failed), its processes are killed, and Ray starts afresh on fresh ports.
    """
    import socket
    import sys
    import time

    import ray

    for attempt in range(1, attempts + 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            metrics_port = s.getsockname()[1]
        started = time.monotonic()
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                _metrics_export_port=metrics_port,
                _system_config={"metrics_report_interval_ms": 1000},
            )
            return metrics_port
        except Exception as exc:
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            session = Path("/tmp/ray/session_latest").resolve()
            took = time.monotonic() - started
            print(f"ray.init failed after {took:.1f} s (attempt {attempt}): {exc}", file=sys.stderr)
            for name in ("raylet.out", "raylet.err", "dashboard_agent.log", "dashboard_agent.err", "gcs_server.err"):
                log = session / "logs" / name
                tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
                if tail:
                    print(f"--- {log} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)
            kill_session_processes(session.name)
            ray.shutdown()
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned helm binary (scripts/install_helm.py installs it into .tools/bin when none is on PATH)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "install_helm.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


# --- test tiers -------------------------------------------------------------------------------------------------
# `pytest -m "not slow"` (`make test-fast`) is the fast tier: pure functions of engine, protocol, jobs and the CLI's
# flag generation, under a minute, no Ray, no helm, no subprocesses. A module that starts Ray, Serve, helm or a
# `phifleet` process declares `pytestmark = pytest.mark.slow`; the fixtures below may only be used by such tests.
SLOW_ONLY_FIXTURES = frozenset({"ray_local", "helm"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = SLOW_ONLY_FIXTURES & set(getattr(item, "fixturenames", ()))
        if used and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(f"{item.nodeid} uses {sorted(used)} but is not marked slow (tests/conftest.py)")
