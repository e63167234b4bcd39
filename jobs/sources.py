"""Reading inputs as raw rows with their file and line, so a malformed row can be reported, not lost.

Files are listed on the driver (local paths, globs, directories, fsspec URLs) and read by Ray tasks,
one file per task, streamed in chunks. Every physical row becomes {source, line, raw, read_error, path,
read_code}: parsing and validation happen in the next stage, where a failure becomes an error row.

Decoding says what happened instead of guessing: files are UTF-8 with or without a byte-order mark; a line that
is not UTF-8, a CSV field over ``input.max_field_bytes`` or a Parquet text value that is not UTF-8 becomes that
row's read error (``read_code`` names it), and the rest of the file is still read.
"""

from __future__ import annotations

import base64
import csv
import json
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

import fsspec
import pyarrow as pa

from phifleet.jobs.config import MAX_FIELD_BYTES
from phifleet.jobs.errors import JobInputError

if TYPE_CHECKING:
    from phifleet.jobs.config import InputConfig

EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
_S = pa.string()
RAW_SCHEMA = pa.schema(
    [
        ("source", _S),  # the file's URL: with ``line``, the row's key for resuming
        ("line", pa.int64()),  # JSONL/CSV: the physical line (a CSV row's last one); Parquet: the row, from 1
        ("raw", _S),
        ("read_error", _S),
        ("path", _S),  # the file's path under the input root: generated ids are '@<path>:<line>'
        ("read_code", _S),  # the read error's code: invalid_utf8, field_too_large, malformed_row, unreadable_file
    ]
)
BOM = b"\xef\xbb\xbf"
_GLOB = re.compile(r"[*?[]")


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


def input_root(path: str) -> str | None:
    """The URL generated ids are relative to: the directory given, a glob's fixed leading directories, or a single
    file's directory. Resolved on the driver (a relative local path means the driver's working directory)."""
    try:
        fs, stripped = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError):
        return None
    stripped = stripped.rstrip("/") or "/"
    if "*" in stripped:  # what fsspec globs (expand_paths)
        parts = stripped.split("/")
        fixed = parts[: next(i for i, part in enumerate(parts) if _GLOB.search(part))]
        root = "/".join(fixed) or ("/" if stripped.startswith("/") else "")
    elif fs.isdir(stripped):
        root = stripped
    else:
        root = posixpath.dirname(stripped)
    return fs.unstrip_protocol(root) if root else None


def relative_path(url: str, root: str | None) -> str:
    """``url``'s path under ``root``. Without a root, its name (the root is taken to be its own directory, as for
    a single file); outside the root, its whole path without the protocol."""
    if not root:
        return url.rstrip("/").rsplit("/", 1)[-1]
    prefix = root if root.endswith("/") else root + "/"
    if url.startswith(prefix) and len(url) > len(prefix):
        return url[len(prefix) :]
    return url.split("://", 1)[-1]


def read_options(config: InputConfig) -> dict[str, Any]:
    """``read_files``' keyword arguments from the job's input section, resolved on the driver."""
    text_columns = tuple(c for c in (config.text_column, config.id_column) if c)
    return {
        "declared_format": config.format,
        "root": input_root(config.path),
        "max_field_bytes": config.max_field_bytes,
        "text_columns": text_columns,
    }


def _known(name: str) -> bool:
    return any(name.lower().endswith(ext) for ext in EXTENSIONS)


def _row(
    source: str, path: str, line: int, raw: str, error: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"source": source, "line": line, "raw": raw, "read_error": error, "path": path, "read_code": code}


class ReadError(ValueError):
    """A whole file (or the rest of it) cannot be read: one error row with ``code``."""

    def __init__(self, message: str, code: str = "unreadable_file") -> None:
        super().__init__(message)
        self.code = code


def _utf8_error(exc: UnicodeDecodeError, line: int, file_offset: int, what: str = "line") -> str:
    bad = exc.object[exc.start : exc.end]
    return (
        f"invalid UTF-8 in {what} {line} at byte {exc.start} of the {what} (byte {file_offset + exc.start} "
        f"of the file): {bad.hex(' ')}"
    )


def iter_rows(
    url: str,
    fmt: str,
    path: str | None = None,
    max_field_bytes: int = MAX_FIELD_BYTES,
    text_columns: Iterable[str] = (),
) -> Iterator[dict[str, Any]]:
    path = relative_path(url, None) if path is None else path
    if fmt == "jsonl":
        with fsspec.open(url, "rb") as fh:
            yield from _jsonl_rows(fh, url, path)
    elif fmt == "csv":
        with fsspec.open(url, "rb") as fh:
            yield from _csv_rows(fh, url, path, max_field_bytes)
    elif fmt == "parquet":
        with fsspec.open(url, "rb") as fh:
            yield from _parquet_rows(fh, url, path, frozenset(text_columns))
    else:
        raise JobInputError(f"unknown input format {fmt!r}")


def _jsonl_rows(fh: IO[bytes], url: str, path: str) -> Iterator[dict[str, Any]]:
    """One row per non-blank line (split on \\n only; a BOM before the first line is dropped)."""
    offset = 0
    for line_no, data in enumerate(fh, 1):
        start, offset = offset, offset + len(data)
        if line_no == 1 and data.startswith(BOM):
            data, start = data[len(BOM) :], start + len(BOM)
        data = data.rstrip(b"\r\n")
        error = None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text, error = data.decode("utf-8", "backslashreplace"), _utf8_error(exc, line_no, start)
        if text.strip():
            yield _row(url, path, line_no, text, error, "invalid_utf8" if error else None)


class _CsvLines:
    """A CSV file's physical lines as text for ``csv.reader`` (\\n, \\r\\n or \\r end a line; a leading BOM is
    dropped), keeping per record what the reader cannot: its first invalid UTF-8 byte (the line is decoded with
    surrogate escapes, so parsing goes on), and whether a quoted field is still open (to skip a record it refused).
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._pieces = self._split(fh)
        self.line = 0  # physical lines handed out
        self.offset = 0  # bytes consumed
        self.begin()

    def _split(self, fh: IO[bytes]) -> Iterator[bytes]:
        for i, data in enumerate(fh):
            if i == 0 and data.startswith(BOM):
                data = data[len(BOM) :]
                self.offset += len(BOM)
            yield from data.splitlines(keepends=True)

    def begin(self) -> None:
        """A new record starts at the next line."""
        self.first_line = self.line + 1
        self.bad_utf8: str | None = None
        self.quotes = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        data = next(self._pieces)
        self.line += 1
        start, self.offset = self.offset, self.offset + len(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if self.bad_utf8 is None:
                self.bad_utf8 = _utf8_error(exc, self.line, start)
            text = data.decode("utf-8", "surrogateescape")
        self.quotes += text.count('"')
        return text

    def skip_record(self) -> None:
        """Drop the rest of a record the reader refused: its lines while a quoted field is open."""
        while self.quotes % 2:
            try:
                next(self)
            except StopIteration:
                return

    @property
    def lines(self) -> str:
        return f"line {self.line}" if self.first_line >= self.line else f"lines {self.first_line}-{self.line}"


def _csv_rows(fh: IO[bytes], url: str, path: str, max_field_bytes: int) -> Iterator[dict[str, Any]]:
    """One row per CSV record, as a JSON object by header name; its line is the record's last physical line."""
    csv.field_size_limit(max_field_bytes)  # characters: a field of more characters has more bytes too
    lines = _CsvLines(fh)
    reader = csv.reader(lines)
    header: list[str] = []
    while not header:
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ReadError(f"cannot read the CSV header ({lines.lines}): {exc}", "malformed_row") from None
    if lines.bad_utf8:
        raise ReadError(f"the CSV header is not UTF-8: {lines.bad_utf8}", "invalid_utf8")
    width = len(header)
    while True:
        lines.begin()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines.skip_record()
            if "field larger than field limit" in str(exc):
                message = f"a field is larger than input.max_field_bytes ({max_field_bytes} bytes) in {lines.lines}"
                yield _row(url, path, lines.line, "", message, "field_too_large")
            else:
                yield _row(url, path, lines.line, "", f"malformed CSV in {lines.lines}: {exc}", "malformed_row")
            continue
        if not fields:  # a blank line
            continue
        record: dict[str, Any] = dict(zip(header, fields, strict=False))
        extra = fields[width:]
        missing = max(0, width - len(fields))
        for name in header[len(fields) :]:
            record[name] = None
        raw = json.dumps(record | ({"_extra": extra} if extra else {}))
        error = code = None
        if lines.bad_utf8:
            error, code = lines.bad_utf8, "invalid_utf8"
        elif any(len(f.encode("utf-8", "surrogateescape")) > max_field_bytes for f in fields):
            error = f"a field is larger than input.max_field_bytes ({max_field_bytes} bytes) in {lines.lines}"
            code, raw = "field_too_large", ""
        elif extra or missing:
            error, code = f"expected {width} fields, got {len(fields)}", "malformed_row"
        yield _row(url, path, lines.line, raw, error, code)


def _parquet_rows(fh: IO[bytes], url: str, path: str, text_columns: frozenset[str]) -> Iterator[dict[str, Any]]:
    """One row per Parquet row. Binary values are decoded as UTF-8: in the job's text and id columns (and string
    columns holding bytes that are not UTF-8) a value that is not UTF-8 is the row's error; in other columns it
    is kept as ``base64:<base64>``."""
    import pyarrow.parquet as pq

    line = 0
    for batch in pq.ParquetFile(fh).iter_batches(batch_size=1024):
        strict = text_columns
        try:
            records = batch.to_pylist()
        except UnicodeDecodeError:  # a string column holding bytes that are not UTF-8: read them as bytes
            declared = [f.name for f in batch.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            casts = {name: batch.column(name).cast(pa.binary()) for name in declared}
            batch = pa.RecordBatch.from_arrays(
                [casts.get(name, batch.column(name)) for name in batch.schema.names], names=batch.schema.names
            )
            strict, records = text_columns | set(declared), batch.to_pylist()
        for record in records:
            line += 1
            try:
                yield _parquet_row(record, strict, url, path, line)
            except Exception as exc:  # whatever one row holds, it is that row's error
                message = f"row {line} cannot be read: {type(exc).__name__}: {exc}"
                yield _row(url, path, line, "", message, "malformed_row")


def _parquet_row(record: dict[str, Any], strict: frozenset[str], url: str, path: str, line: int) -> dict[str, Any]:
    error = None
    for name, value in record.items():
        if isinstance(value, bytes):
            try:
                record[name] = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                if name in strict and error is None:
                    bad = value[exc.start : exc.end].hex(" ")
                    error = f"column '{name}' in row {line} is not UTF-8 text: invalid byte {exc.start}: {bad}"
                record[name] = value.decode("utf-8", "backslashreplace") if name in strict else _lenient(value)
        else:
            record[name] = _lenient(value)
    raw = json.dumps(record, default=str)
    return _row(url, path, line, raw, error, "invalid_utf8" if error else None)


def _lenient(value: Any) -> Any:
    """Nested values as JSON can hold them: bytes as UTF-8 text, or ``base64:<base64>`` when they are not text."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _lenient(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lenient(v) for v in value]
    return value


def read_files(
    batch: pa.Table,
    declared_format: str,
    chunk_rows: int,
    root: str | None = None,
    max_field_bytes: int = MAX_FIELD_BYTES,
    text_columns: tuple[str, ...] = (),
) -> Iterator[pa.Table]:
    """Ray map_batches UDF: a batch of file URLs in, chunks of raw rows out (streamed). ``root`` and the rest come
    from ``read_options`` on the driver; without a root, generated ids hold the file's name only (unique for a
    single file, not for a partitioned directory: pass ``read_options``)."""
    for url in batch.column("url").to_pylist():
        url = str(url)
        path = relative_path(url, root)
        chunk: list[dict[str, Any]] = []
        last = 0
        try:
            for row in iter_rows(url, format_of(url, declared_format), path, max_field_bytes, text_columns):
                chunk.append(row)
                last = row["line"]
                if len(chunk) >= chunk_rows:
                    yield _columns(chunk)
                    chunk = []
        except Exception as exc:
            # A file that cannot be read past some point: the rows read so far stay, the rest is one error.
            code = exc.code if isinstance(exc, ReadError) else "unreadable_file"
            reason = str(exc) if isinstance(exc, ReadError) else f"{type(exc).__name__}: {exc}"
            message = f"unreadable file from line {last + 1}: {reason}"
            chunk.append(_row(url, path, last + 1, "", message, code))
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
