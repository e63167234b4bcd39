"""The output-folder contract: ownership, identity, one writer at a time, overwrite.

- **Ownership.** ``OUT/_phifleet.json`` (the marker) says phifleet created the folder. A run writes only into a
  folder that is new, empty, or marked; it refuses any other non-empty folder and names what is in it. In its
  own folder phifleet deletes only its own names (``_index/part-*.json``, ``results/part-*``,
  ``errors/part-*``, ``manifest.json``, ``output.jsonl``, ``errors.jsonl`` and their ``*.tmp-<hex>``
  temporaries), never another file and never a folder.
- **Identity.** The marker records the job's fingerprint (jobs/identity.py: what shapes results) and each
  input file's. A re-run with a different config or changed input stops naming what changed; a moved input
  with the same content is recognised and its committed rows are kept.
- **One writer.** ``OUT/_phifleet.lock`` (jobs/lock.py), held with a heartbeat for the whole run.
- **Overwrite.** ``output.overwrite: true`` starts afresh in a marked folder: phifleet's own files are removed
  (the index first, so a crash part-way leaves a consistent, resumable folder), then a new marker is written.
"""

from __future__ import annotations

import _thread
import json
import logging
import re
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec

from phifleet.jobs.durable import is_tmp, join, list_files, read_bytes, remove, write_atomic
from phifleet.jobs.errors import JobInputError
from phifleet.jobs.identity import check_inputs, config_changes, config_identity, describe_inputs, digest
from phifleet.jobs.kinds import job_kind
from phifleet.jobs.lock import LOCK_FILE, TAKEOVER_FILE, LockLostError, OutputLock
from phifleet.jobs.sinks import (
    ERRORS_DIR,
    INDEX_DIR,
    INDEX_RE,
    OWN_TMP_RE,
    RESULTS_DIR,
    SHARD_RE,
    Committed,
    load_committed,
)

if TYPE_CHECKING:
    from types import TracebackType

    from phifleet.engine.loading import ResolvedModel
    from phifleet.jobs.config import JobConfig

log = logging.getLogger(__name__)

MARKER_FILE = "_phifleet.json"
MARKER_VERSION = 1
MANIFEST_FILE = "manifest.json"
# Files at the folder's top that are phifleet's: the lock's and the marker's are never "content".
BOOKKEEPING = {MARKER_FILE, LOCK_FILE, TAKEOVER_FILE}
OWN_TOP_FILES = {MANIFEST_FILE, "output.jsonl", "errors.jsonl"}
_OWN_NAMES = "|".join(re.escape(n) for n in sorted({*BOOKKEEPING, *OWN_TOP_FILES}))
_OWN_TOP_TMP = re.compile(rf"^({_OWN_NAMES})\.tmp-[0-9a-f]+$")
HOW_TO_OVERWRITE = "--overwrite (output.overwrite: true)"


class OutputNotOwnedError(JobInputError):
    """The output folder has files and was not created by phifleet."""


class OutputIdentityError(JobInputError):
    """The output folder holds another job's rows, or rows of input that has changed since."""


class OutputFolder:
    """The run's hold on its output folder: ``open`` claims and checks it, leaving the block releases the lock."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.url = config.output.path
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.lock: OutputLock | None = None
        self.identity: dict[str, Any] = {}
        self.moved: dict[str, str] = {}  # old input url -> new url (same content)
        self.fresh = False  # this run started the folder (new, empty, or overwritten)
        self._interrupted = False
        self._main_thread = False

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.lock is None:
            return
        self.lock.release()
        if self.lock.lost and (exc_type is None or (exc_type is KeyboardInterrupt and self._interrupted)):
            raise LockLostError(
                f"this run lost the lock on {self.url} while it ran ({self.lock.lost}): it was paused for longer "
                "than the lock's stale limit and another run took over. Rows both wrote may be doubled: re-run "
                f"with {HOW_TO_OVERWRITE} once no other run uses the folder."
            ) from exc

    # --- the claim ------------------------------------------------------------------------------------------

    def open(self, model: ResolvedModel, urls: list[str]) -> Committed:
        """Claim the folder for this run and return what earlier runs of the same job committed there."""
        config = self.config
        self.identity = config_identity(config, model, job_kind(config, model.served_name).output_format)
        self._refuse_foreign()  # before the lock: a foreign folder gets no lock file either
        self.lock = OutputLock(self.url)
        self.lock.acquire()
        self._main_thread = threading.current_thread() is threading.main_thread()
        self.lock.start_heartbeat(on_lost=self._interrupt)
        self._remove_top_tmp()
        marker = self._read_marker()
        if marker is None:
            self._refuse_foreign()  # again, under the lock
            self._start(urls)
        elif config.output.overwrite:
            log.warning("output.overwrite: removing phifleet's files from %s", self.url)
            self._remove_own_files()
            self._start(urls)
        else:
            self._check_same_job(marker, urls)
        committed = load_committed(self.url)
        if self.moved:
            committed.keys = {(self.moved.get(s, s), n) for s, n in committed.keys}
        return committed

    def _interrupt(self) -> None:
        """The heartbeat found the lock taken over: stop the run (the driver's main thread) as Ctrl-C would."""
        if self._main_thread:
            self._interrupted = True
            _thread.interrupt_main()

    def _entries(self) -> list[tuple[str, bool]]:
        """(name, is a folder) of what is directly in the output folder; empty if it does not exist."""
        try:
            if self.fs.isfile(self.root):
                raise OutputNotOwnedError(f"output {self.url} is a file, not a folder")
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        return [(e["name"].rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory") for e in entries]

    def _refuse_foreign(self) -> None:
        entries = self._entries()
        names = {name for name, _ in entries}
        if MARKER_FILE in names:
            return
        content = sorted(
            name + ("/" if is_dir else "")
            for name, is_dir in entries
            if name not in BOOKKEEPING and not _OWN_TOP_TMP.match(name)
        )
        if not content:
            return
        shown = ", ".join(content[:8]) + (f" and {len(content) - 8} more" if len(content) > 8 else "")
        old = " It looks like the output of a phifleet version before output markers." if INDEX_DIR in names else ""
        raise OutputNotOwnedError(
            f"output {self.url} is not empty and was not created by phifleet (it has no {MARKER_FILE}): it holds "
            f"{shown}.{old} phifleet writes only into a new or empty folder, or one it created, so that it never "
            "mixes its files with others or deletes yours: choose another --output, or empty this folder first."
        )

    def _read_marker(self) -> dict[str, Any] | None:
        data = read_bytes(self.fs, join(self.root, MARKER_FILE))
        if data is None:
            return None
        try:
            marker = json.loads(data)
            if not isinstance(marker, dict) or not isinstance(marker.get("identity", {}).get("config"), dict):
                raise ValueError("no identity")
        except (ValueError, AttributeError):
            marker = {"unreadable": True}
        return marker

    def _write_marker(self, inputs: list[dict[str, Any]], created: dict[str, Any] | None = None) -> None:
        now = datetime.now(UTC).isoformat()
        owner = self.lock.owner if self.lock else "?"
        marker = {
            "phifleet_output": MARKER_VERSION,
            "about": "This folder is a phifleet job's output; phifleet uses this file to resume the job safely.",
            "created_at": (created or {}).get("created_at", now),
            "created_by": (created or {}).get("created_by", owner),
            "updated_at": now,
            "identity": {"digest": digest(self.identity), "config": self.identity},
            "inputs": inputs,
        }
        write_atomic(self.fs, join(self.root, MARKER_FILE), json.dumps(marker, indent=1).encode())

    def _start(self, urls: list[str]) -> None:
        self.fresh = True
        self._write_marker(describe_inputs(urls))

    def _check_same_job(self, marker: dict[str, Any], urls: list[str]) -> None:
        if marker.get("unreadable"):
            raise OutputIdentityError(
                f"output {self.url} has an unreadable {MARKER_FILE}, so its rows cannot be matched to this job: "
                f"use a new output folder, or {HOW_TO_OVERWRITE} to start this job afresh in it."
            )
        changes = config_changes(marker["identity"]["config"], self.identity)
        check = check_inputs(list(marker.get("inputs", [])), urls)
        if changes or check.changed:
            committed = sum(1 for n in list_files(self.fs, join(self.root, INDEX_DIR)) if INDEX_RE.match(n))
            what = "\n".join(f"  - {line}" for line in [*changes, *check.changed])
            raise OutputIdentityError(
                f"output {self.url} holds {committed} committed shard(s) of a different job or input, which this "
                f"run would silently reuse:\n{what}\nUse a new output folder for the new job, or "
                f"{HOW_TO_OVERWRITE} to start it afresh here (phifleet then removes only its own files in the folder)."
            )
        self.moved = check.moved
        if check.updated:
            for old, new in sorted(check.moved.items()):
                log.warning("input %s moved to %s (same content): its committed rows are kept", old, new)
            self._write_marker(check.records, created=marker)

    # --- clean-up: phifleet's own names only ----------------------------------------------------------------

    def _remove_top_tmp(self) -> None:
        for name in list_files(self.fs, self.root):
            if _OWN_TOP_TMP.match(name):
                remove(self.fs, join(self.root, name))

    def _remove_own_files(self) -> None:
        """Everything a run of phifleet writes here, index first: a crash part-way leaves shards uncommitted."""
        for name in list_files(self.fs, join(self.root, INDEX_DIR)):
            if INDEX_RE.match(name) or OWN_TMP_RE.match(name):
                remove(self.fs, join(self.root, INDEX_DIR, name))
        for sub in (RESULTS_DIR, ERRORS_DIR):
            for name in list_files(self.fs, join(self.root, sub)):
                if SHARD_RE.match(name) or OWN_TMP_RE.match(name):
                    remove(self.fs, join(self.root, sub, name))
        for name in list_files(self.fs, self.root):
            if name in OWN_TOP_FILES or (is_tmp(name) and _OWN_TOP_TMP.match(name)):
                remove(self.fs, join(self.root, name))
