"""Output shards with exactly-once commits, and what a re-run needs to resume.

Each block of rows is written as up to two shards (results, errors) named by a hash of the rows'
(file, line) keys, then committed by writing its index file last. A retried task rewrites the same
names; a crash leaves shards without an index, which the next run deletes before it starts. So every
input row ends in exactly one committed result or error, across crashes and re-runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from phifleet.jobs.rows import RowError

if TYPE_CHECKING:
    from phifleet.jobs.kinds.base import JobKind

INDEX_DIR, RESULTS_DIR, ERRORS_DIR = "_index", "results", "errors"


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write whole-or-nothing: a temporary name, then a rename (object stores publish on close anyway)."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
    fs.mv(tmp, path)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


class ShardWriter:
    """Writes one block's rows as result and error shards, shaped by the job's kind, then commits them."""

    def __init__(self, kind: JobKind) -> None:
        self.kind = kind
        self.fs, self.root = fsspec.core.url_to_fs(kind.config.output.path)
        self.fmt = kind.output_format

    def write(self, batch: dict[str, Any]) -> dict[str, Any]:
        keys = [(str(s), int(n)) for s, n in zip(batch["source"], batch["line"], strict=True)]
        name = "part-" + hashlib.sha1("\n".join(f"{s}:{n}" for s, n in sorted(keys)).encode()).hexdigest()[:20]
        results, errors = [], []
        labels: Counter[str] = Counter()
        prompt_tokens = completion_tokens = 0
        for i, (source, line) in enumerate(keys):
            rid = batch["id"][i]
            if batch["error"][i] is not None:
                error = RowError(batch["error"][i], batch["error_code"][i] or "invalid_request", batch["param"][i])
                errors.append(self.kind.error_row(rid, error, source, line, batch["raw"][i]))
                continue
            output = json.loads(batch["output"][i])
            results.append(self.kind.result_row(rid, output, source, line))
            tally = self.kind.tally(output)
            prompt_tokens += tally.prompt_tokens
            completion_tokens += tally.completion_tokens
            if tally.label is not None:
                labels[tally.label] += 1
        if results:
            _put(self.fs, _join(self.root, RESULTS_DIR, f"{name}.{self.fmt}"), self._encode(results))
        if errors:
            _put(self.fs, _join(self.root, ERRORS_DIR, f"{name}.jsonl"), _jsonl(errors))
        summary = {
            "shard": name,
            "ok": len(results),
            "errors": len(errors),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "labels": json.dumps(dict(labels)),
        }
        index = {**summary, "labels": dict(labels), "rows": [[s, n] for s, n in keys]}
        _put(self.fs, _join(self.root, INDEX_DIR, f"{name}.json"), json.dumps(index).encode())  # the commit
        return summary

    def _encode(self, rows: list[dict[str, Any]]) -> bytes:
        if self.fmt == "jsonl":
            return _jsonl(rows)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf)
        return buf.getvalue()


@dataclass
class Committed:
    """What earlier runs committed into an output directory."""

    keys: set[tuple[str, int]] = field(default_factory=set)
    ok: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    shards: list[str] = field(default_factory=list)


def load_committed(output_path: str) -> Committed:
    """Read every committed index, and delete shards a crash left uncommitted."""
    fs, root = fsspec.core.url_to_fs(output_path)
    fs.makedirs(root, exist_ok=True)
    state = Committed()
    index_dir = _join(root, INDEX_DIR)
    for path in sorted(fs.glob(_join(index_dir, "*.json"))):
        index = json.loads(fs.cat_file(path))
        state.shards.append(index["shard"])
        state.keys.update((s, n) for s, n in index["rows"])
        state.ok += index["ok"]
        state.errors += index["errors"]
        state.prompt_tokens += index["prompt_tokens"]
        state.completion_tokens += index["completion_tokens"]
        state.labels.update(index["labels"])
    committed = set(state.shards)
    for sub in (RESULTS_DIR, ERRORS_DIR):
        for path in fs.glob(_join(root, sub, "*")):
            name = path.rsplit("/", 1)[-1].split(".", 1)[0]
            if name not in committed or ".tmp-" in path:
                fs.rm(path)
    for path in fs.glob(_join(index_dir, "*.tmp-*")):
        fs.rm(path)
    return state


def committed_count(output_path: str) -> int:
    fs, root = fsspec.core.url_to_fs(output_path)
    return len(fs.glob(_join(root, INDEX_DIR, "*.json")))


def merge_jsonl(output_path: str, sub: str, target: str) -> int:
    """Concatenate a directory of JSONL shards into one file (OpenAI Batch output/error files)."""
    fs, root = fsspec.core.url_to_fs(output_path)
    lines = 0
    with fs.open(_join(root, target), "wb") as out:
        for path in sorted(fs.glob(_join(root, sub, "*.jsonl"))):
            data = fs.cat_file(path)
            lines += data.count(b"\n")
            out.write(data)
    return lines
