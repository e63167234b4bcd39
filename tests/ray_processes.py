"""Ray processes of one session, found by their command lines: stopping one Ray without `ray stop` (which stops
every Ray on the machine, the test session's own among them)."""

from __future__ import annotations

import os
from pathlib import Path


def kill_session_processes(session_name: str) -> None:
    """SIGKILL every process whose command line names this Ray session (GCS, raylet, agents of a failed start)."""
    import contextlib
    import signal

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if session_name.encode() in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)
