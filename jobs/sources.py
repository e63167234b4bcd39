"""Reading inputs as raw rows with their file and line, so a malformed row can be reported, not lost.

Files are listed on the driver (local paths, globs, directories, fsspec URLs) and read by Ray tasks,
one file per task, streamed in chunks. Every physical row becomes {source, line, raw, read_error}:
parsing and validation happen in the next stage, where a failure becomes an error row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa

from phifleet.jobs.errors import JobInputError

EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
RAW_SCHEMA = pa.schema(
    [("source", pa.string()), ("line", pa.int64()), ("raw", pa.string()), ("read_error", pa.string())]
)


def format_of(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    for ext, fmt in EXTENSIONS.items():
        if path.lower().endswith(ext):
            return fmt
    raise JobInputError(f"cannot tell the format of {path}: name it .jsonl, .parquet or .csv, or set input.format")


def expand_paths(path: str, declared_format: str = "auto") -> list[str]:
    """The input files behind a file, directory or glob, as fully qualified URLs, sorted."""
    try:
        fs, _, paths = fsspec.get_fs_token_paths(path)
    except (ImportError, ValueError) as exc:  # e.g. abfs:// without adlfs installed
        raise JobInputError(f"cannot open {path}: {exc}") from exc
    files: list[str] = []
    for p in paths:
        if fs.isdir(p):
            found = sorted(f for f in fs.find(p) if declared_format != "auto" or _known(f))
            files.extend(found)
        elif fs.exists(p):
            files.append(p)
    if not files:
        raise JobInputError(f"input {path} matches no files")
    return [fs.unstrip_protocol(f) for f in sorted(set(files))]


def _known(name: str) -> bool:
    return any(name.lower().endswith(ext) for ext in EXTENSIONS)


def _row(source: str, line: int, raw: str, error: str | None = None) -> dict[str, Any]:
    return {"source": source, "line": line, "raw": raw, "read_error": error}


def iter_rows(url: str, fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "jsonl":
        with fsspec.open(url, "rt", encoding="utf-8", errors="replace", newline="") as fh:
            for line_no, line in enumerate(fh, 1):
                if line.strip():
                    yield _row(url, line_no, line.rstrip("\r\n"))
    elif fmt == "csv":
        with fsspec.open(url, "rt", encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            width = len(reader.fieldnames or [])
            for record in reader:
                extra = record.pop(None, None)  # type: ignore[call-overload]
                missing = [k for k, v in record.items() if v is None]
                raw = json.dumps(record | ({"_extra": extra} if extra else {}))
                error = None
                if extra or missing:
                    got = width + len(extra or []) - len(missing)
                    error = f"expected {width} fields, got {got}"
                yield _row(url, reader.line_num, raw, error)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        with fsspec.open(url, "rb") as fh:
            line_no = 0
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=4096):
                for record in batch.to_pylist():
                    line_no += 1
                    yield _row(url, line_no, json.dumps(record, default=str))
    else:
        raise JobInputError(f"unknown input format {fmt!r}")


def read_files(batch: pa.Table, declared_format: str, chunk_rows: int) -> Iterator[pa.Table]:
    """Ray map_batches UDF: a batch of file URLs in, chunks of raw rows out (streamed)."""
    for url in batch.column("url").to_pylist():
        chunk: list[dict[str, Any]] = []
        try:
            for row in iter_rows(str(url), format_of(str(url), declared_format)):
                chunk.append(row)
                if len(chunk) >= chunk_rows:
                    yield _columns(chunk)
                    chunk = []
        except (UnicodeError, OSError, ValueError) as exc:
            # A file that cannot be read past some point: the rows read so far stay, the rest is one error.
            line = (chunk[-1]["line"] + 1) if chunk else 0
            chunk.append(_row(str(url), line, "", f"unreadable file from line {line}: {exc}"))
        if chunk:
            yield _columns(chunk)


def _columns(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


def parse_record(raw: str) -> dict[str, Any]:
    """The row's fields; raises ValueError with a short reason for malformed JSON, a non-object line, or JSON
    nested deeper than the parser can go (a RecursionError would otherwise fail the whole block)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError:
        raise ValueError("malformed JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def bytes_per_row(urls: list[str], declared_format: str, sample_bytes: int = 1 << 20) -> float:
    """Average stored bytes per row, from a sample of the first file: sizes blocks to a batch of rows."""
    url = urls[0]
    fmt = format_of(url, declared_format)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with fsspec.open(url, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
            size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            return max(1.0, size / max(1, meta.num_rows))
    with fsspec.open(url, "rb") as fh:
        sample = fh.read(sample_bytes)
    return max(1.0, len(sample) / max(1, sample.count(b"\n")))
