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
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from phifleet.jobs.config import BatchTask, JobConfig, LabelTask
from phifleet.jobs.tasks import batch_error_line

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
    def __init__(self, config: JobConfig, model_name: str) -> None:
        self.config = config
        self.model = model_name
        self.fs, self.root = fsspec.core.url_to_fs(config.output.path)
        self.batch_task = isinstance(config.task, BatchTask)
        self.fmt = "jsonl" if self.batch_task else config.output.format

    def write(self, batch: dict[str, Any]) -> dict[str, Any]:
        keys = [(str(s), int(n)) for s, n in zip(batch["source"], batch["line"], strict=True)]
        name = "part-" + hashlib.sha1("\n".join(f"{s}:{n}" for s, n in sorted(keys)).encode()).hexdigest()[:20]
        results, errors = [], []
        labels: Counter[str] = Counter()
        prompt_tokens = completion_tokens = 0
        for i, (source, line) in enumerate(keys):
            rid = batch["id"][i]
            if batch["error"][i] is not None:
                errors.append(self._error_row(batch, i, source, line))
                continue
            out = json.loads(batch["output"][i])
            row = self._result_row(rid, out, source, line)
            results.append(row)
            if "label" in out:
                labels[out["label"]] += 1
            if self.batch_task:
                p, c = out["usage_tokens"]
            else:
                p, c = out.get("prompt_tokens", 0), out.get("completion_tokens", 0)
            prompt_tokens += p
            completion_tokens += c
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

    def _result_row(self, rid: str, out: dict[str, Any], source: str, line: int) -> dict[str, Any]:
        if self.batch_task:
            req = f"batch_req_{hashlib.sha1(f'{rid}:{line}'.encode()).hexdigest()[:24]}"
            return {
                "id": req,
                "custom_id": rid,
                "response": {"status_code": 200, "request_id": req, "body": out["body"]},
                "error": None,
            }
        row = {"id": rid, **out, "model": self.model, "source": source, "line": line}
        if isinstance(self.config.task, LabelTask):  # a struct column keyed by label, same in every shard
            row["logprobs"] = {label: out["logprobs"][label] for label in self.config.task.labels}
        return row

    def _error_row(self, batch: dict[str, Any], i: int, source: str, line: int) -> dict[str, Any]:
        rid, message, code, param = batch["id"][i], batch["error"][i], batch["error_code"][i], batch["param"][i]
        if self.batch_task:
            return batch_error_line(rid, f"line {line}: {message}", code or "invalid_request", param, line)
        return {"id": rid, "source": source, "line": line, "error": message, "code": code, "raw": batch["raw"][i]}

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
