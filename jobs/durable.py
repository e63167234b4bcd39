"""Whole-or-nothing, durable writes to a local folder or an object store (fsspec).

Locally a file is written under a temporary name, flushed and fsynced, renamed over its final name, and the
folder is fsynced so the rename itself survives a power cut: a reader sees the old file or the new one, never a
part. Object stores publish an object only when its upload completes, so small files are put directly; a
streamed file (``open_atomic``) is uploaded under a temporary name and then copied server-side to its name.
Other remote filesystems write a temporary name and rename it (their rename is the atomic step).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_MARK = ".tmp-"
_TMP_RE = re.compile(r"\.tmp-[0-9a-f]+$")


# Stores that publish an object whole when its upload completes (a direct put is atomic there).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "memory"})


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool(OBJECT_STORES & set(protocols))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def is_tmp(name: str) -> bool:
    """A temporary name this module writes (``<name>.tmp-<hex>``)."""
    return bool(_TMP_RE.search(name))


def tmp_name(path: str) -> str:
    return f"{path}{TMP_MARK}{uuid.uuid4().hex[:8]}"


def fsync_dir(path: str) -> None:
    """Make a folder's entries (a rename, a new file) durable. No-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the data itself was fsynced
    finally:
        os.close(fd)


def ensure_dir(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Create a folder (and its parents); locally, a new folder's own entry is made durable too."""
    if not is_local(fs):
        fs.makedirs(path, exist_ok=True)
        return
    if os.path.isdir(path):
        return
    missing = []
    p = path.rstrip("/")
    while p and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    os.makedirs(path, exist_ok=True)
    for created in missing:
        fsync_dir(os.path.dirname(created))


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes, fsync: bool = True) -> None:
    """``path`` holds ``data`` whole or keeps what it held; durable once this returns."""
    parent = path.rsplit("/", 1)[0]
    ensure_dir(fs, parent)
    if is_object_store(fs):
        fs.pipe_file(path, data)  # one PUT: published whole on completion
        return
    tmp = tmp_name(path)
    if not is_local(fs):  # another remote filesystem (sftp, hdfs...): its rename is the atomic step
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
        return
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(parent)


@contextlib.contextmanager
def open_atomic(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """A binary file to stream into; ``path`` gets it whole when the block ends, and nothing on an exception."""
    parent = path.rsplit("/", 1)[0]
    ensure_dir(fs, parent)
    tmp = tmp_name(path)
    try:
        if is_local(fs):
            with open(tmp, "xb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(parent)
        else:
            with fs.open(tmp, "wb") as fh:
                yield fh
            fs.mv(tmp, path)  # a server-side copy: the object appears whole
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rm_file(tmp)
        raise


def remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete one file (never a folder); a file already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """The file's bytes, or None when it does not exist or cannot be read."""
    try:
        return fs.cat_file(path)
    except OSError:
        return None


def list_files(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, int]:
    """Plain files directly in ``path`` (name -> size); folders are left out; a missing folder is empty."""
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    return {
        e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0) for e in entries if e.get("type") == "file"
    }
