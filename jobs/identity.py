"""What makes two runs the same job: a fingerprint of the config that shapes results, and of each input file.

The config fingerprint holds what changes a row's result: the task (labels, instruction, prompt template,
sampling, request limits), how rows are read and identified (every input setting but the path), the shard
format, and the model: its served name, context window, dtype and seed, and the resolved directory's files
(small files by content hash; weight files and anything over 64 MiB by name and size, plus the Hugging Face
blob hash where the file links into the cache). Pool sizes, batch sizes, device, backend, batching and the
Ray address are left out: they change how fast a job runs, not what it writes.

An input file is fingerprinted by its size plus, locally, its modification time and a SHA-256 of its content
(one read on the driver, about 1 GB/s); on an object store by the version and checksum ``fs.info`` reports
(ETag, generation, last-modified; md5/crc32c where the store keeps one). A re-run compares size and
mtime/version first and reads a local file again only when they differ, so a file touched or copied without
changing is not a change. A file found at a new path with the same size and checksum is the same input moved
(two identical files are paired by relative path, then by name).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec

from phifleet.jobs.durable import is_local

if TYPE_CHECKING:
    from phifleet.engine.loading import ResolvedModel
    from phifleet.jobs.config import JobConfig

HASH_LIMIT = 64 << 20  # larger model files are identified by name and size, whatever their suffix
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".ckpt")
# Version-like keys fsspec backends report (s3fs, gcsfs, adlfs, local); the first checksum-like one found
# identifies the content across a move.
VERSION_KEYS = ("ETag", "etag", "generation", "VersionId", "version_id", "LastModified", "last_modified", "updated")
CHECKSUM_KEYS = ("md5Hash", "ContentMD5", "content_md5", "crc32c", "ChecksumSHA256")


def digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# --- the job's config ---------------------------------------------------------------------------------------


def model_files(path: Path) -> dict[str, str]:
    """The resolved model folder's files: content hashes for config/tokenizer files, name + size for weights."""
    out: dict[str, str] = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or not f.is_file():
            continue  # .git, .cache and the like are not the model
        if f.name.endswith(WEIGHT_SUFFIXES) or f.stat().st_size > HASH_LIMIT:
            ident = f"size {f.stat().st_size}"
            target = f.resolve()
            if f.is_symlink() and target.parent.name == "blobs":  # the HF cache names a blob by its hash
                ident += f", blob {target.name}"
            out[rel] = ident
        else:
            out[rel] = file_sha256(str(f))
    return out


def config_identity(config: JobConfig, model: ResolvedModel, output_format: str) -> dict[str, Any]:
    """The part of the job's config that decides what each row's result is (see the module's docstring)."""
    return {
        "task": config.task.model_dump(mode="json"),
        "input": config.input.model_dump(mode="json", exclude={"path"}),
        "output": {"format": output_format},
        "model": {
            "served_name": model.served_name,
            "context_window": model.context_window,
            "dtype": config.engine.dtype,
            "seed": config.engine.seed,
            "files": model_files(Path(model.path)),
        },
    }


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs, one line per field: 'task.labels: [...] -> [...]'."""
    a, b = _flat(before), _flat(now)
    missing = object()
    lines = []
    for key in sorted(a.keys() | b.keys()):
        old, new = a.get(key, missing), b.get(key, missing)
        if old != new:
            shown = ["(none)" if v is missing else json.dumps(v, default=str) for v in (old, new)]
            lines.append(f"{key}: {_short(shown[0])} -> {_short(shown[1])}")
    return lines


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the input files ----------------------------------------------------------------------------------------


def _strip(url: str) -> str:
    return url.split("://", 1)[-1]


def relative_paths(urls: Iterable[str]) -> dict[str, str]:
    """Each file's path relative to the folder all of them share (a lone file: its name)."""
    urls = list(urls)
    paths = [_strip(u) for u in urls]
    if len(paths) == 1:
        return {urls[0]: posixpath.basename(paths[0])}
    common = posixpath.commonpath(paths)
    return {u: posixpath.relpath(p, common) for u, p in zip(urls, paths, strict=True)}


def describe_file(url: str, rel: str, with_digest: bool) -> dict[str, Any]:
    """One input file's record: url, rel, size and mtime_ns (local) or version (object store), and digest."""
    fs, path = fsspec.core.url_to_fs(url)
    rec: dict[str, Any] = {"url": url, "rel": rel}
    if is_local(fs):
        st = os.stat(path)
        rec.update(size=st.st_size, mtime_ns=st.st_mtime_ns, digest=file_sha256(path) if with_digest else None)
        return rec
    info = fs.info(path)
    rec["size"] = int(info.get("size") or 0)
    rec["version"] = json.dumps({k: info[k] for k in VERSION_KEYS if info.get(k) is not None}, default=str)
    checksum = next((info[k] for k in CHECKSUM_KEYS if info.get(k)), None)
    if checksum is None and type(fs).__name__ == "S3FileSystem" and "-" not in str(info.get("ETag", "-")):
        checksum = info["ETag"]  # a single-part S3 upload's ETag is its MD5
    if isinstance(checksum, bytes | bytearray):
        checksum = checksum.hex()
    rec["digest"] = f"store:{str(checksum).strip(chr(34))}" if checksum else None
    return rec


def describe_inputs(urls: list[str]) -> list[dict[str, Any]]:
    rel = relative_paths(urls)
    return [{**describe_file(u, rel[u], with_digest=True), "aliases": []} for u in urls]


@dataclass
class InputCheck:
    """How the input now compares with the recorded one."""

    records: list[dict[str, Any]]  # the updated records (new mtimes, moved urls) to keep
    changed: list[str] = field(default_factory=list)  # one line per file that differs
    moved: dict[str, str] = field(default_factory=dict)  # old url -> new url, same content
    updated: bool = False  # records differ from what was stored (a new mtime, a move): write them back


def _same(old: dict[str, Any], now: dict[str, Any], url: str) -> tuple[bool, dict[str, Any]]:
    """Whether the file at ``url`` is unchanged since ``old``; the record to keep."""
    if old.get("size") != now.get("size"):
        return False, now
    if "mtime_ns" in now:
        if old.get("mtime_ns") == now["mtime_ns"] and old.get("digest"):
            return True, {**now, "digest": old["digest"]}
        now = {**now, "digest": file_sha256(fsspec.core.url_to_fs(url)[1])}  # touched or copied: the content decides
        return now["digest"] == old.get("digest"), now
    if old.get("version") == now.get("version"):
        return True, now
    return bool(now.get("digest")) and now.get("digest") == old.get("digest"), now


def check_inputs(recorded: list[dict[str, Any]], urls: list[str]) -> InputCheck:
    rel = relative_paths(urls)
    old_by_url = {r["url"]: r for r in recorded}
    result = InputCheck(records=[])
    new_files: list[dict[str, Any]] = []
    for url in urls:
        old = old_by_url.pop(url, None)
        if old is None:
            new_files.append({**describe_file(url, rel[url], with_digest=True), "aliases": []})
            continue
        now = describe_file(url, rel[url], with_digest=False)
        same, keep = _same(old, now, url)
        keep = {**keep, "aliases": old.get("aliases", [])}
        if not same:
            result.changed.append(f"input {url} changed since this output was started ({_what(old, keep)})")
        result.records.append(keep)
    gone = list(old_by_url.values())
    for new in new_files:
        match = _pair(new, gone)
        if match is None:
            result.changed.append(f"input {new['url']} is new to this output ({new['size']} bytes)")
            result.records.append(new)
            continue
        gone.remove(match)
        result.moved[match["url"]] = new["url"]
        for alias in match.get("aliases", []):
            result.moved[alias] = new["url"]
        result.records.append({**new, "aliases": sorted({*match.get("aliases", []), match["url"]})})
    for old in gone:
        result.changed.append(f"input {old['url']} is gone (no file of the same content was found in its place)")
    result.updated = _by_url(result.records) != _by_url(recorded)
    return result


def _by_url(records: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def _pair(new: dict[str, Any], gone: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The vanished file with ``new``'s size and checksum: the same relative path first, then the same name."""
    same = [g for g in gone if new.get("digest") and g.get("digest") == new["digest"] and g["size"] == new["size"]]
    name = posixpath.basename(new["url"])
    ranked = sorted(same, key=lambda g: (g.get("rel") != new["rel"], posixpath.basename(g["url"]) != name, g["url"]))
    return ranked[0] if ranked else None


def _what(old: dict[str, Any], now: dict[str, Any]) -> str:
    if old.get("size") != now.get("size"):
        return f"size {old.get('size')} -> {now.get('size')} bytes"
    if "mtime_ns" in now:
        return "same size, different content"
    return f"version {old.get('version')} -> {now.get('version')}"
