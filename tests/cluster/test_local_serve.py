"""`phifleet serve`'s checks that run before Ray starts (fast tier: no Ray is started here)."""

from __future__ import annotations

import socket

import pytest
import ray

from phifleet.cluster.cli import main


def test_a_port_in_use_is_refused_before_ray_starts(capsys: pytest.CaptureFixture[str]) -> None:
    """Serve's proxy would only fail later with `RuntimeError: Failed to bind to address` (checked on Ray 2.60)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} is already in use" in err and "--port" in err
    assert not ray.is_initialized()


def test_a_bad_serve_flag_fails_before_the_port_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--max-replicas", "0", "--port", "1"]) == 2
    assert "deployment.autoscaling.max_replicas (--max-replicas)" in capsys.readouterr().err
