"""One writer per output folder: a lock file with its owner and a heartbeat a thread refreshes.

``OUT/_phifleet.lock`` is created exclusively (``os.open(O_CREAT | O_EXCL)`` locally; on object stores
fsspec's ``pipe_file(mode="create")``, a conditional put where the backend has one) and holds
``{token, owner, user, host, pid, pid_ns, run_started_at, heartbeat_at, heartbeat_s, stale_after_s}``.
While the job runs a thread rewrites it every ``heartbeat_s`` (after checking it is still ours). A second run
fails fast naming the owner. A lock is stale, and is taken over, when its process is dead on this host (same
host name and pid namespace, pid gone or a zombie) or when its heartbeat is older than ``stale_after_s``.

A takeover is serialised by a second exclusive file, ``_phifleet.lock.takeover``: the taker re-reads the lock
under it and replaces it only if it is still the stale one it judged. Limits: the heartbeat age is read
against this machine's clock (clocks must agree to well within ``stale_after_s``); a holder paused for longer
than that loses the lock, notices on its next heartbeat and stops; fsspec backends without a conditional put
check-then-write, which leaves a short race between two runs starting at the same moment.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import fsspec

from phifleet.jobs.durable import ensure_dir, fsync_dir, is_local, join, read_bytes, remove, write_atomic
from phifleet.jobs.errors import JobInputError

log = logging.getLogger(__name__)

LOCK_FILE = "_phifleet.lock"
TAKEOVER_FILE = "_phifleet.lock.takeover"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
TAKEOVER_STALE_S = 30.0  # a takeover takes milliseconds; one this old was left by a crash


class OutputLockedError(JobInputError):
    """Another run holds the output folder's lock."""


class LockLostError(JobInputError):
    """This run's lock was taken over while it ran (it was paused for longer than the stale limit)."""


def _pid_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return True


def describe_owner(info: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = now - float(info.get("heartbeat_at", 0))
    return f"{info.get('owner', '?')} (run started {info.get('run_started_at', '?')}, last heartbeat {age:.0f} s ago)"


def stale_reason(info: dict[str, Any] | None, mtime: float | None, now: float | None = None) -> str | None:
    """Why the lock described by ``info`` (None: unreadable) may be taken over, or None while it is live."""
    now = time.time() if now is None else now
    if info is None:  # being written this very moment, or left half-written by a crash
        return "an unreadable lock file" if mtime is not None and now - mtime > STALE_AFTER_S else None
    same_host = info.get("host") == socket.gethostname() and info.get("pid_ns", "") == _pid_ns()
    if same_host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
        return f"its process {info['pid']} on this host is gone"
    limit = float(info.get("stale_after_s", STALE_AFTER_S))
    age = now - float(info.get("heartbeat_at", 0))
    if age > limit:
        return f"no heartbeat for {age:.0f} s (stale after {limit:.0f} s)"
    return None


class OutputLock:
    """The lock on one output folder; ``acquire`` raises OutputLockedError naming a live owner."""

    def __init__(self, output_path: str, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.fs, self.root = fsspec.core.url_to_fs(output_path)
        self.path = join(self.root, LOCK_FILE)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.token = uuid.uuid4().hex
        self.started = datetime.now(UTC).isoformat()
        self.lost: str | None = None  # why, once the lock was found not to be ours
        self.took_over: str | None = None  # the stale lock this run replaced, described
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_lost: Any = None

    # --- the file ---------------------------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        return f"{_user()}@{socket.gethostname()} pid {os.getpid()}"

    def _content(self) -> bytes:
        host, pid = socket.gethostname(), os.getpid()
        info = {
            "token": self.token,
            "owner": self.owner,
            "user": _user(),
            "host": host,
            "pid": pid,
            "pid_ns": _pid_ns(),
            "run_started_at": self.started,
            "heartbeat_at": time.time(),
            "heartbeat_s": self.heartbeat_s,
            "stale_after_s": self.stale_after_s,
        }
        return json.dumps(info, indent=1).encode()

    def _create(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` only if it does not exist; False if it does."""
        if not is_local(self.fs):
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            return True
        ensure_dir(self.fs, self.root)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.root)
        return True

    def read(self) -> tuple[dict[str, Any] | None, float | None, bool]:
        """(the lock's content or None if unreadable, its mtime, whether it exists)."""
        data = read_bytes(self.fs, self.path)
        if data is None:
            return None, None, False
        try:
            mtime: float | None = _mtime(self.fs, self.path)
        except FileNotFoundError:
            return None, None, False
        try:
            info = json.loads(data)
            return (info if isinstance(info, dict) else None), mtime, True
        except ValueError:
            return None, mtime, True

    # --- acquire, heartbeat, release --------------------------------------------------------------------------

    def acquire(self) -> None:
        for attempt in range(3):  # a lock released or taken over between our reads: look again
            if attempt:
                time.sleep(0.2)
            if self._create(self.path, self._content()):
                return
            info, mtime, exists = self.read()
            if not exists:
                continue
            reason = stale_reason(info, mtime)
            if reason is None:
                raise OutputLockedError(self._locked_message(info))
            if self._take_over(info, reason):
                return
        info, _, _ = self.read()
        raise OutputLockedError(self._locked_message(info))

    def _locked_message(self, info: dict[str, Any] | None) -> str:
        owner = describe_owner(info) if info else "a run whose lock file is being written"
        stale = float((info or {}).get("stale_after_s", STALE_AFTER_S))
        return (
            f"output {self.root} is in use by {owner}. One run writes to an output folder at a time: wait for it "
            f"to finish, or use another output. If that run is gone, its lock ({self.path}) is taken over once "
            f"its heartbeat is {stale:.0f} s old (at once when it ran on this host)."
        )

    def _take_over(self, stale: dict[str, Any] | None, reason: str) -> bool:
        takeover = join(self.root, TAKEOVER_FILE)
        if not self._create(takeover, json.dumps({"token": self.token, "at": time.time()}).encode()):
            data = read_bytes(self.fs, takeover)
            try:
                at = float(json.loads(data or b"{}").get("at", 0))
            except ValueError:
                at = 0.0
            if time.time() - at > TAKEOVER_STALE_S:
                remove(self.fs, takeover)  # left by a crash mid-takeover; the next attempt retries
            return False
        try:
            info, _, exists = self.read()
            if exists and (info or {}).get("token") != (stale or {}).get("token"):
                return False  # it changed since we judged it: look again
            if exists and info is not None and stale_reason(info, None) is None:
                return False  # it heartbeat meanwhile
            remove(self.fs, self.path)
            if not self._create(self.path, self._content()):
                return False  # a run starting just now created it first: it owns the lock
            self.took_over = f"{describe_owner(stale) if stale else 'an unreadable lock'}: {reason}"
            log.warning("took over the stale lock of %s", self.took_over)
            return True
        finally:
            remove(self.fs, takeover)

    def start_heartbeat(self, on_lost: Any = None) -> None:
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._beat, name="phifleet-output-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                info, _, _ = self.read()
                if (info or {}).get("token") != self.token:
                    self.lost = f"the lock is now held by {describe_owner(info) if info else 'nobody'}"
                    log.error("lost the output lock %s: %s", self.path, self.lost)
                    if self._on_lost is not None:
                        self._on_lost()
                    return
                write_atomic(self.fs, self.path, self._content())
            except OSError as exc:  # a storage hiccup: try again next beat; staleness allows several misses
                log.warning("could not refresh the output lock %s: %s", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        info, _, _ = self.read()
        if (info or {}).get("token") == self.token:
            remove(self.fs, self.path)
            if is_local(self.fs):
                fsync_dir(self.root)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def _mtime(fs: fsspec.AbstractFileSystem, path: str) -> float | None:
    info = fs.info(path)
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None
