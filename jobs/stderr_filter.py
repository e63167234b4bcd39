"""Ray's C++ notices kept off a job's default output: a filter on file descriptor 2, not on Python logging.

The driver's Ray core worker prints, once per Ray Data actor pool, ``core_worker.cc:…: Actor with class name:
'MapWorker(MapBatches(Replica))' … has constructor arguments in the object store and max_restarts > 0 …``
(ray-project/ray#53727). It reads like a failure and is harmless here: Ray Data always puts its map transformer
in the object store (``MapOperator._map_transformer_ref``) and the driver owns that object for the whole run, so
a restarted replica still finds its arguments (tests/jobs/test_fault_tolerance.py restarts one). Ray's C++ logging
writes straight to fd 2, so only a filter at the descriptor level can hold the line back: ``filtered_stderr``
points fd 2 at a pipe and forwards every line that matches none of the patterns to the real stderr, in order.

The reader is a small process (this file run as ``python -I -S``: standard library only), not a thread: a thread
dies with its process, and a driver that aborts (a C++ check failure, a segfault's faulthandler dump) would take
the bytes still in the pipe with it, the fatal message among them. The reader reads until every writer is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager

#: Ray's notice that an actor's constructor arguments are in the object store (see the module docstring).
RAY_CORE_NOTICES: tuple[re.Pattern[str], ...] = (
    re.compile(r"core_worker\.cc\b.*constructor arguments in the object store"),
)

#: How long an unterminated chunk that starts like a C++ log line (``[``) waits for its newline before it is
#: forwarded as it is.
HOLD_S = 0.2
#: How long leaving the filter waits for the reader to forward what was written inside it.
DRAIN_TIMEOUT_S = 5.0

_READ_SIZE = 1 << 16  # a pipe's capacity: one read takes all there is, never part of one write


class LineFilter:
    """Bytes in, bytes to forward out: complete lines that match a pattern are dropped, everything else kept.

    A chunk without its newline goes out at once (the live progress line is ``"\\r…\\x1b[K"``, never ended)
    unless it starts with ``[``, as C++ log lines do: that waits for its newline or ``hold_s``. A C++ line
    written after an unfinished one (the live line) is dropped from the ``[`` that opens it: what came before it
    is kept, whether it was read together with it or had gone out already.
    """

    def __init__(self, patterns: Sequence[re.Pattern[str]], hold_s: float = HOLD_S) -> None:
        self.patterns = tuple(patterns)
        self.hold_s = hold_s
        self._pending = b""
        self._held_since: float | None = None

    @property
    def deadline(self) -> float | None:
        """When the held chunk goes out without its newline (``time.monotonic()``); None while nothing is held."""
        return None if self._held_since is None else self._held_since + self.hold_s

    def feed(self, data: bytes, now: float) -> bytes:
        *lines, partial = (self._pending + data).split(b"\n")
        out = [self._kept(line + b"\n") for line in lines]
        if lines:
            self._held_since = None  # what was held is part of a complete line now
        self._pending = b""
        if partial.startswith(b"[") and (self._held_since is None or now < self._held_since + self.hold_s):
            self._pending = partial
            if self._held_since is None:
                self._held_since = now
        else:
            out.append(partial)
            self._held_since = None
        return b"".join(out)

    def flush(self) -> bytes:
        """Everything held, as it is."""
        out, self._pending, self._held_since = self._pending, b"", None
        return out

    def _matches(self, line: bytes) -> bool:
        text = line.decode("utf-8", "replace")
        return any(p.search(text) for p in self.patterns)

    def _kept(self, line: bytes) -> bytes:
        if not self._matches(line):
            return line
        start = line.rfind(b"[")  # the "[" that opens the C++ line: the last one the match still follows
        while start > 0 and not self._matches(line[start:]):
            start = line.rfind(b"[", 0, start)
        return line[:start] if start > 0 else b""


@contextlib.contextmanager
def filtered_stderr(patterns: Sequence[re.Pattern[str]]) -> Iterator[None]:
    """File descriptor 2 through a ``LineFilter`` for the duration: lines matching ``patterns`` are dropped.

    Whatever writes to fd 2 (Python's ``sys.stderr``, C++ logging, child processes that inherit it) goes through
    it. On exit fd 2 is restored and everything written inside has been forwarded before this returns. Where fd
    2 is not open (or no reader can be started) it changes nothing.
    """
    running = _start(patterns)
    try:
        yield
    finally:
        if running is not None:
            running.stop()


def quiet_ray_core(verbose: bool) -> AbstractContextManager[None]:
    """``RAY_CORE_NOTICES`` off stderr unless ``verbose`` (the counterpart of progress.quiet_ray_data)."""
    return contextlib.nullcontext() if verbose else filtered_stderr(RAY_CORE_NOTICES)


class _Running:
    """The parent's side of a started filter: the saved stderr, the pipe's write end, the reader's ack."""

    def __init__(self, proc: subprocess.Popen[bytes], saved: int, write_fd: int, ack_fd: int, sentinel: bytes):
        self.proc, self.saved, self.write_fd, self.ack_fd, self.sentinel = proc, saved, write_fd, ack_fd, sentinel

    def stop(self) -> None:
        _flush_python_stderr()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        # Everything this process wrote is in the pipe before the sentinel; the reader acks once it has
        # forwarded all of it. Waiting for its exit instead would wait on any child still holding the pipe.
        with contextlib.suppress(OSError):
            os.write(self.write_fd, self.sentinel)
        os.close(self.write_fd)
        with contextlib.suppress(OSError):
            select.select([self.ack_fd], [], [], DRAIN_TIMEOUT_S)
        os.close(self.ack_fd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=0.5)


def _start(patterns: Sequence[re.Pattern[str]]) -> _Running | None:
    if os.name != "posix" or not patterns or not sys.executable or not os.path.exists(__file__):
        return None
    try:
        os.fstat(2)
    except OSError:
        return None
    _flush_python_stderr()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    ack_read, ack_write = os.pipe()
    sentinel = b"\0stderr-filter-" + secrets.token_hex(16).encode() + b"\0"
    spec = json.dumps([[p.pattern, p.flags] for p in patterns])
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, sentinel.hex(), str(ack_write), spec],
            stdin=read_fd,
            stdout=saved,
            stderr=saved,
            pass_fds=(ack_write,),
            start_new_session=True,  # a terminal's Ctrl-C goes to the job, not to its stderr
        )
    except OSError:
        for fd in (saved, write_fd, ack_read):
            os.close(fd)
        return None
    finally:
        os.close(read_fd)
        os.close(ack_write)
    os.dup2(write_fd, 2)
    return _Running(proc, saved, write_fd, ack_read, sentinel)


def _flush_python_stderr() -> None:
    for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s is not None}.values():
        with contextlib.suppress(Exception):
            stream.flush()


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; a stderr that is gone or broken takes nothing (the pipe is still drained)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # a non-blocking stderr (shared with the parent's): wait until it takes more
            select.select([], [fd], [], 1.0)
        except OSError:
            return


def _pump(sentinel: bytes, ack_fd: int, patterns: Sequence[re.Pattern[str]]) -> None:
    """The reader: stdin (the pipe) to stdout (the saved stderr) through a ``LineFilter``, until end of file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line_filter = LineFilter(patterns)
    while True:
        deadline = line_filter.deadline
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([0], [], [], timeout)[0]:
            _write_all(1, line_filter.feed(b"", time.monotonic()))  # the held chunk's time is up
            continue
        data = os.read(0, _READ_SIZE)
        if not data:
            break
        if ack_fd >= 0 and sentinel in data:
            before, _, data = data.partition(sentinel)
            _write_all(1, line_filter.feed(before, time.monotonic()) + line_filter.flush())
            with contextlib.suppress(OSError):
                os.write(ack_fd, b"1")
                os.close(ack_fd)
            ack_fd = -1
        _write_all(1, line_filter.feed(data, time.monotonic()))
    _write_all(1, line_filter.flush())


if __name__ == "__main__":
    _pump(
        bytes.fromhex(sys.argv[1]),
        int(sys.argv[2]),
        [re.compile(pattern, flags) for pattern, flags in json.loads(sys.argv[3])],
    )
