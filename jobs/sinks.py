"""Output shards with exactly-once commits, and what a re-run needs to resume.

Each block of rows is written as up to two shards (results, errors) named by a hash of the rows'
(file, line) keys, then committed by writing its index entry last; every file is written whole-or-nothing
and fsynced (jobs/durable.py). A retried task rewrites the same names; a crash leaves shards without an index
entry, which the next run deletes before it starts, and an index entry that cannot be read back (truncated,
or naming a shard that is missing or of the wrong size) is dropped with its shards so its rows are done again.
So every input row ends in exactly one committed result or error, across crashes and re-runs.

Only phifleet's own names are ever deleted: ``part-*`` shards and index entries, and ``*.tmp-<hex>`` files
under them; any other file, and every folder, is left alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from phifleet.jobs.durable import join, list_files, open_atomic, read_bytes, remove, write_atomic
from phifleet.jobs.rows import RowError

if TYPE_CHECKING:
    from phifleet.jobs.kinds.base import JobKind

log = logging.getLogger(__name__)

INDEX_DIR, RESULTS_DIR, ERRORS_DIR = "_index", "results", "errors"
INDEX_VERSION = 1
# phifleet's shard and index names; anything else in results/, errors/ or _index/ is not its own.
SHARD_RE = re.compile(r"^part-[A-Za-z0-9_-]+\.(parquet|jsonl)$")
INDEX_RE = re.compile(r"^part-[A-Za-z0-9_-]+\.json$")
OWN_TMP_RE = re.compile(r"^part-[A-Za-z0-9_-]+\.[a-z]+\.tmp-[0-9a-f]+$")


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
            try:
                output = json.loads(batch["output"][i])
                row, tally = self.kind.result_row(rid, output, source, line), self.kind.tally(output)
            except Exception as exc:  # a result that cannot be written is that row's error, not the block's
                error = RowError(f"the result could not be written: {type(exc).__name__}: {exc}", "write_error")
                errors.append(self.kind.error_row(rid, error, source, line, batch["raw"][i]))
                continue
            results.append(row)
            prompt_tokens += tally.prompt_tokens
            completion_tokens += tally.completion_tokens
            if tally.label is not None:
                labels[tally.label] += 1
        files: dict[str, int] = {}  # each shard's size: a later run checks it before trusting the entry
        if results:
            self._put(files, f"{RESULTS_DIR}/{name}.{self.fmt}", self._encode(results))
        if errors:
            self._put(files, f"{ERRORS_DIR}/{name}.jsonl", _jsonl(errors))
        summary = {
            "shard": name,
            "ok": len(results),
            "errors": len(errors),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "labels": json.dumps(dict(labels)),
        }
        index = {
            "v": INDEX_VERSION,
            **summary,
            "labels": dict(labels),
            "files": files,
            "rows": [[s, n] for s, n in keys],
        }
        write_atomic(self.fs, join(self.root, INDEX_DIR, f"{name}.json"), json.dumps(index).encode())  # the commit
        return summary

    def _put(self, files: dict[str, int], rel: str, data: bytes) -> None:
        write_atomic(self.fs, join(self.root, rel), data)
        files[rel] = len(data)

    def _encode(self, rows: list[dict[str, Any]]) -> bytes:
        if self.fmt == "jsonl":
            return _jsonl(rows)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=self.kind.result_schema()), buf)
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
    dropped: list[str] = field(default_factory=list)  # index entries that could not be read back: rows redone


def _valid_index(data: bytes | None, shard_sizes: dict[str, int]) -> dict[str, Any] | None:
    """The index entry, or None if it is truncated, malformed, or names a shard that is missing or differs."""
    if not data:
        return None
    try:
        index = json.loads(data)
        rows = [(str(s), int(n)) for s, n in index["rows"]]
        counts = [int(index[k]) for k in ("ok", "errors", "prompt_tokens", "completion_tokens")]
        labels = {str(k): int(v) for k, v in dict(index["labels"]).items()}
        shard = str(index["shard"])
        files = dict(index.get("files", {}))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    if counts[0] + counts[1] != len(rows) or any(n < 0 for n in counts):
        return None
    for rel, size in files.items():
        if shard_sizes.get(rel) != size:
            return None
    return {"shard": shard, "rows": rows, "counts": counts, "labels": labels}


def load_committed(output_path: str) -> Committed:
    """Read every committed index entry, drop unreadable ones, and delete phifleet's uncommitted shards.

    The caller holds the output's lock (jobs/output.py): nothing else writes there meanwhile.
    """
    fs, root = fsspec.core.url_to_fs(output_path)
    fs.makedirs(root, exist_ok=True)
    state = Committed()
    shard_sizes = {
        f"{sub}/{name}": size
        for sub in (RESULTS_DIR, ERRORS_DIR)
        for name, size in list_files(fs, join(root, sub)).items()
    }
    index_dir = join(root, INDEX_DIR)
    for name in sorted(list_files(fs, index_dir)):
        path = join(index_dir, name)
        if OWN_TMP_RE.match(name):
            remove(fs, path)
            continue
        if not INDEX_RE.match(name):
            continue  # not phifleet's
        index = _valid_index(read_bytes(fs, path), shard_sizes)
        if index is None:
            log.warning("dropping unreadable index entry %s: its rows are done again", path)
            state.dropped.append(name)
            remove(fs, path)  # uncommit first: its shards are then uncommitted and removed below
            continue
        state.shards.append(index["shard"])
        state.keys.update(index["rows"])
        ok, errors, prompt_tokens, completion_tokens = index["counts"]
        state.ok += ok
        state.errors += errors
        state.prompt_tokens += prompt_tokens
        state.completion_tokens += completion_tokens
        state.labels.update(index["labels"])
    committed = set(state.shards)
    for rel in shard_sizes:
        sub, name = rel.split("/", 1)
        own_tmp = OWN_TMP_RE.match(name) is not None
        if own_tmp or (SHARD_RE.match(name) and name.split(".", 1)[0] not in committed):
            remove(fs, join(root, sub, name))
    return state


def committed_count(output_path: str) -> int:
    fs, root = fsspec.core.url_to_fs(output_path)
    return len(fs.glob(join(root, INDEX_DIR, "part-*.json")))


def merge_jsonl(output_path: str, sub: str, target: str) -> int:
    """Concatenate a directory's JSONL shards into one file (OpenAI Batch output/error files), atomically."""
    fs, root = fsspec.core.url_to_fs(output_path)
    lines = 0
    names = sorted(n for n in list_files(fs, join(root, sub)) if SHARD_RE.match(n) and n.endswith(".jsonl"))
    with open_atomic(fs, join(root, target)) as out:
        for name in names:
            data = fs.cat_file(join(root, sub, name))
            lines += data.count(b"\n")
            out.write(data)
    return lines
