"""The engine loop on a thread of its own, for servers: submit a request from any thread, hear about it by callback.

Requests join the running batch at the next step, streaming and non-streaming alike (they share steps), and a
cancelled request leaves at the next step. Other engine work (label scoring) runs between steps on the same
thread, so nothing touches the model concurrently. A step that fails as a whole fails the requests it held, each
told once; those still waiting for a place run at a later step, and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from phifleet.engine.engine import Engine
from phifleet.engine.sequence import Sequence
from phifleet.engine.types import StreamDelta

log = logging.getLogger(__name__)

#: Called on the engine thread: a delta (the last one has ``finish_reason``), or the exception that ended it.
Listener = Callable[[StreamDelta | BaseException], None]


@dataclass
class DriverStats:
    steps: int = 0
    rows: int = 0  # sum over steps of the requests that advanced
    largest_step: int = 0
    submitted: dict[str, int] = field(default_factory=dict)
    kind_steps: dict[str, int] = field(default_factory=dict)  # steps that advanced a request of this kind
    kind_rows: dict[str, int] = field(default_factory=dict)
    largest_kind_step: dict[str, int] = field(default_factory=dict)


class EngineDriver:
    """Owns ``engine.loop()`` on a daemon thread. ``submit`` and ``call`` are thread-safe."""

    def __init__(self, engine: Engine, name: str = "engine-loop", on_step: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.on_step = on_step  # hears the requests each step advanced (a batch-size metric), on the engine thread
        self.loop = engine.loop()
        self.stats = DriverStats()
        self._lock = threading.Condition()
        self._incoming: list[tuple[Sequence, Listener, str]] = []
        self._calls: list[tuple[Callable[[], Any], Future]] = []
        self._listeners: dict[int, tuple[Sequence, Listener, str]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- any thread ------------------------------------------------------------------------
    def submit(self, seq: Sequence, listener: Listener, kind: str = "generate") -> None:
        """Queue a prepared request; ``listener`` hears each delta (streaming or not) and its end."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine driver is closed")
            self._incoming.append((seq, listener, kind))
            self._lock.notify()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the engine thread between two steps (engine work that is not a generation)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine driver is closed")
            self._calls.append((fn, future))
            self._lock.notify()
        return future

    @property
    def waiting(self) -> int:
        """Requests submitted but not yet running (queued here or in the scheduler)."""
        return len(self._incoming) + len(self.loop.scheduler.waiting)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=30)

    # --- the engine thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug outside a step: every waiting caller hears it, none hangs
            log.exception("the engine loop stopped")
            self._settle_all(exc)
            raise
        self._settle_all(RuntimeError("the engine driver closed"))

    def _settle_all(self, exc: BaseException) -> None:
        with self._lock:
            self._closed = True
            incoming, self._incoming = self._incoming, []
            calls, self._calls = self._calls, []
        for _, listener, _ in incoming:
            _tell(listener, exc)
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)
        self._fail_all(exc)

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not (self._closed or self._incoming or self._calls or self.loop.has_work()):
                    self._lock.wait()
                if self._closed:
                    break
                incoming, self._incoming = self._incoming, []
                calls, self._calls = self._calls, []
            for fn, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:
                        future.set_exception(exc)
            for seq, listener, kind in incoming:
                self._admit(seq, listener, kind)
            if self.loop.has_work():
                self._step()

    def _admit(self, seq: Sequence, listener: Listener, kind: str) -> None:
        self.stats.submitted[kind] = self.stats.submitted.get(kind, 0) + 1
        try:
            self.loop.add(seq)
        except Exception as exc:  # too long for the pool: this request alone
            _tell(listener, exc)
            return
        self._listeners[id(seq)] = (seq, listener, kind)

    def _step(self) -> None:
        try:
            advanced = self.loop.step()
        except Exception as exc:  # the forward pass itself broke: its requests fail, the loop goes on
            held = self.loop.running()
            log.exception("an engine step failed; failing the %d requests it held", len(held) or len(self._listeners))
            # With nothing running the failure was not any request's step: all fail, or the loop would spin on it.
            self._fail(held or None, exc)
            return
        self._count(advanced)
        for seq in advanced:
            entry = self._listeners.get(id(seq))
            if entry is None:
                continue
            _, listener, _ = entry
            if seq.error is not None:
                _tell(listener, seq.error)
            elif not seq.cancelled:
                delta = seq.stream_delta()
                if delta is not None:
                    _tell(listener, delta)
        told = set(map(id, advanced))
        for key, (seq, listener, _) in list(self._listeners.items()):
            if seq.finished:
                del self._listeners[key]
                if key not in told and seq.error is not None:
                    _tell(listener, seq.error)  # failed without advancing

    def _count(self, advanced: list[Sequence]) -> None:
        if self.on_step is not None and advanced:
            try:
                self.on_step(len(advanced))
            except Exception:
                log.exception("an engine step listener raised")
        st = self.stats
        st.steps += 1
        st.rows += len(advanced)
        st.largest_step = max(st.largest_step, len(advanced))
        per_kind: dict[str, int] = {}
        for seq in advanced:
            entry = self._listeners.get(id(seq))
            if entry is not None:
                per_kind[entry[2]] = per_kind.get(entry[2], 0) + 1
        for kind, n in per_kind.items():
            st.kind_steps[kind] = st.kind_steps.get(kind, 0) + 1
            st.kind_rows[kind] = st.kind_rows.get(kind, 0) + n
            st.largest_kind_step[kind] = max(st.largest_kind_step.get(kind, 0), n)

    def _fail_all(self, exc: BaseException) -> None:
        self._fail(None, exc)

    def _fail(self, seqs: list[Sequence] | None, exc: BaseException) -> None:
        """Fail these requests (None: every one the driver holds), each listener told once."""
        doomed = list(self._listeners) if seqs is None else [id(s) for s in seqs if id(s) in self._listeners]
        failed = [self._listeners.pop(key) for key in doomed]
        listening = [listener for seq, listener, _ in failed if not seq.cancelled]  # before abort cancels them
        self.loop.abort([seq for seq, _, _ in failed])
        for listener in listening:
            _tell(listener, exc)


def _tell(listener: Listener, item: StreamDelta | BaseException) -> None:
    try:
        listener(item)
    except Exception:  # a listener's own bug must not stop the loop
        log.exception("an engine listener raised")
