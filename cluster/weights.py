"""Model weights that arrive, verified: the fetch a Ray pod's init container runs before the engine loads them.

``python -m phifleet.cluster.weights --source URL --dest DIR [--revision REV]`` copies a model folder from any
fsspec URL (``abfs://container@account.dfs.core.windows.net/phi-4`` with AKS workload identity, ``s3://``,
``gs://``, ``file://``) into ``DIR`` and exits non-zero, leaving no marker, if any step fails. Fail-closed:

- every file is streamed into a hidden partial folder beside ``DIR`` (this fetch's own, named by its lock token)
  and checked against the source's listing (size) and, when the source folder has a ``SHA256SUMS`` file
  (``sha256sum`` format), against its sha256; a file the list names but the source lacks, or one it does not
  name, is an error;
- the marker ``.phifleet-weights.json`` (source, revision, each file's size and sha256) is written into the
  partial folder, and renaming that folder to ``DIR`` is the commit: ``DIR`` is complete or absent;
- weights are never replaced under running replicas: a ``DIR`` holding another source or revision, or files
  phifleet did not put there, is refused (a new revision goes to its own ``--dest``); only a damaged copy of the
  same source and revision (a file of the wrong size) is replaced;
- pods that start together take turns through a lock beside ``DIR`` (jobs/lock.py: owner, heartbeat, stale
  takeover); the one that waited finds ``DIR`` complete and copies nothing.

The chart renders the command (templates/_helpers.tpl ``phifleet.initContainers``) from ``model.fetch``, the
``FetchConfig`` model below.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from phifleet.jobs.durable import fsync_dir
from phifleet.jobs.lock import OutputLock, OutputLockedError

log = logging.getLogger("phifleet.weights")

MARKER = ".phifleet-weights.json"
CHECKSUMS = "SHA256SUMS"
LOCK_WAIT_S = 5.0
_CHUNK = 8 << 20


class FetchConfig(BaseModel):
    """Where a model's weights come from (the chart's ``model.fetch``; empty ``source``: no fetch)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        default="",
        description="fsspec URL of the model folder (abfs://container@account.dfs.core.windows.net/phi-4 with "
        "workload identity, s3://, gs://, file://); empty: the weights must already be on the volume.",
    )
    revision: str = Field(
        default="",
        description="Your version label for what the source holds; with the source it keys the marker, so a new "
        "revision is fetched again.",
    )
    path: str = Field(
        default="phi-4",
        pattern=r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*)*$",
        description="Folder under the model mount path the weights go to (the engine's `model` is "
        "<mountPath>/<path>); a new revision needs a new path: weights are never replaced under running replicas.",
    )


class FetchError(RuntimeError):
    """A fetch that cannot be trusted: nothing is marked complete."""


_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def parse_checksums(text: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <path>``, ``*`` for binary mode) as {relative path: hex}."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            raise FetchError(f"{CHECKSUMS} line {number} is not '<sha256>  <path>': {line[:120]!r}")
        name = match.group(2).removeprefix("./")
        if name in sums:
            raise FetchError(f"{CHECKSUMS} line {number} lists {name!r} a second time")
        sums[name] = match.group(1).lower()
    return sums


def marker_matches(dest: Path, source: str, revision: str) -> bool:
    """Whether ``dest`` holds a complete fetch of this source and revision, every file at its recorded size."""
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("source") != source or marker.get("revision") != revision:
        return False
    files: dict[str, Any] = marker.get("files") or {}
    for name, info in files.items():
        try:
            if (dest / name).stat().st_size != info["size"]:
                return False
        except OSError:
            return False
    return bool(files)


def _safe_name(name: str) -> str:
    """A source file's path relative to the folder, refused if it could land outside the copy."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise FetchError(f"the source has a file named {name!r}, which cannot be copied safely")
    return name


def _listing(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, int]:
    """{path relative to root: size} of every file under the source folder."""
    if not fs.isdir(root):
        raise FetchError(f"the source {root!r} is not a folder (or cannot be read)")
    found = fs.find(root, detail=True)
    prefix = root.rstrip("/") + "/"
    files = {
        _safe_name(path[len(prefix) :]): int(info["size"]) for path, info in found.items() if info.get("type") == "file"
    }
    if not files:
        raise FetchError(f"the source {root!r} has no files")
    return files


def _copy_one(fs: fsspec.AbstractFileSystem, remote: str, local: Path) -> tuple[int, str]:
    """Stream one file, hashing as it goes (one pass over the bytes); (size, sha256), fsynced."""
    digest, size = hashlib.sha256(), 0
    local.parent.mkdir(parents=True, exist_ok=True)
    with fs.open(remote, "rb") as src, local.open("wb") as dst:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _copy(fs: fsspec.AbstractFileSystem, root: str, partial: Path, listing: dict[str, int]) -> dict[str, Any]:
    """Copy every listed file into ``partial``; return {name: {size, sha256}} after checking sizes and sums."""
    sums = None
    if CHECKSUMS in listing:
        sums = parse_checksums(fs.cat_file(f"{root.rstrip('/')}/{CHECKSUMS}").decode())
        names = set(listing) - {CHECKSUMS}
        missing, unlisted = sorted(set(sums) - names), sorted(names - set(sums))
        if missing or unlisted:
            raise FetchError(f"{CHECKSUMS} does not match the source: missing {missing}, not listed {unlisted}")
    files: dict[str, Any] = {}
    for name, size in sorted(listing.items()):
        if name == CHECKSUMS:
            continue
        got, digest = _copy_one(fs, f"{root.rstrip('/')}/{name}", partial / name)
        if got != size:
            raise FetchError(f"{name}: copied {got} bytes, the source lists {size}")
        if sums is not None and digest != sums[name]:
            raise FetchError(f"{name}: sha256 {digest} does not match {CHECKSUMS} ({sums[name]})")
        files[name] = {"size": size, "sha256": digest}
    for folder, _, _ in os.walk(partial):
        fsync_dir(folder)
    return files


def _write_marker(folder: Path, marker: dict[str, Any]) -> None:
    tmp = folder / f"{MARKER}.tmp-{os.getpid()}"
    with tmp.open("w") as fh:
        json.dump(marker, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MARKER)
    fsync_dir(str(folder))


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        return json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _clear_way(dest: Path, source: str, revision: str, aside: Path) -> None:
    """Make room for the new copy at ``dest``, refusing to touch what may be in use or is not ours."""
    if not dest.exists():
        return
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
        return
    marker = _read_marker(dest)
    if marker is None:
        raise FetchError(
            f"{dest} exists and holds files phifleet did not fetch (no {MARKER}): move them away, or fetch to "
            "another folder"
        )
    if (marker.get("source"), marker.get("revision")) != (source, revision):
        raise FetchError(
            f"{dest} holds {marker.get('source')}@{marker.get('revision') or '-'}: fetch "
            f"{source}@{revision or '-'} to a folder of its own (model.fetch.path) and point the engine there; "
            "weights are never replaced under replicas that may be reading them"
        )
    os.replace(dest, aside)  # the same model, damaged: out of the way (removed once the new copy is in place)


def fetch(
    source: str, dest: Path, revision: str = "", lock_wait_s: float = LOCK_WAIT_S, timeout_s: float = 3 * 3600
) -> str:
    """Make ``dest`` a verified copy of ``source``: 'present' (its marker matched, nothing copied) or 'fetched'."""
    dest = Path(os.path.abspath(dest))
    if dest.name in ("", ".", "..") or dest == dest.parent:
        raise FetchError(f"--dest {dest} is not a folder to fetch into")
    if marker_matches(dest, source, revision):
        return "present"
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(str(dest.parent / f".{dest.name}.phifleet-fetch"))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lock.acquire()
            break
        except OutputLockedError as exc:  # another pod is fetching this folder: wait for it, then read its marker
            if time.monotonic() > deadline:
                raise FetchError(f"gave up after {timeout_s:.0f} s waiting for another fetch of {dest}") from exc
            log.info("another pod is fetching %s; waiting", dest)
            time.sleep(lock_wait_s)
    lock.start_heartbeat()
    partial = dest.parent / f".{dest.name}.partial-{lock.token}"
    aside = dest.parent / f".{dest.name}.replaced-{lock.token}"
    try:
        if marker_matches(dest, source, revision):
            return "present"
        for stale in dest.parent.glob(f".{dest.name}.partial-*"):  # left by fetches that died (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        fs, root = fsspec.core.url_to_fs(source)
        listing = _listing(fs, root)
        partial.mkdir()
        started = time.monotonic()
        files = _copy(fs, root, partial, listing)
        marker = {
            "source": source,
            "revision": revision,
            "verified": "sha256" if CHECKSUMS in listing else "size",
            "fetched_at": datetime.now(UTC).isoformat(),
            "seconds": round(time.monotonic() - started, 3),
            "files": files,
        }
        _write_marker(partial, marker)
        if lock.lost:
            raise FetchError(f"lost the lock on {dest} while fetching (another pod took it over): not committing")
        _clear_way(dest, source, revision, aside)
        os.replace(partial, dest)  # the commit: dest is complete, marker included, or absent
        fsync_dir(str(dest.parent))
        return "fetched"
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phifleet.cluster.weights", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help=FetchConfig.model_fields["source"].description)
    parser.add_argument("--dest", required=True, type=Path, help="the model folder to fill (on the model volume)")
    parser.add_argument("--revision", default="", help=FetchConfig.model_fields["revision"].description)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        if not args.source:
            raise FetchError("--source is empty")
        outcome = fetch(args.source, args.dest, args.revision)
    except Exception as exc:  # every failure is one line and a non-zero exit: the pod does not start
        print(f"phifleet weights: {args.source} -> {args.dest}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"phifleet weights: {args.dest}: {outcome} ({args.source}@{args.revision or '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
