"""Inputs that say what happened and ids that cannot collide, end to end on a local Ray with real files: every
input row ends in exactly one result or error row, whatever its file layout, encoding or id."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifleet.jobs.config import BatchTask, InputConfig, JobConfig, LabelTask, OutputConfig, PoolConfig
from phifleet.jobs.pipeline import run_job
from tests.jobs.conftest import read_errors, read_jsonl, read_results, write_jsonl

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

BOM = b"\xef\xbb\xbf"
OK, ERR = "ok", "error"


def jsonl_bytes(rows: list) -> bytes:
    """Rows are dicts (written as JSON) or bytes (written as they are)."""
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def write_inputs(folder) -> dict[tuple[str, int], tuple[str, str]]:
    """A partitioned input of every format; returns what each row must become, by (path under folder, line):
    (OK, its id) or (ERR, its error code)."""
    for sub in "abcde":
        (folder / sub).mkdir(parents=True)
    expected: dict[tuple[str, int], tuple[str, str]] = {}

    # Two files named part-0.parquet: generated ids from the path under the input root, not the basename.
    pq.write_table(pa.table({"text": ["The pan is great", "The kettle is awful"]}), folder / "a/part-0.parquet")
    # A text column stored as binary: decoded as UTF-8 (not the prompt "b'The pan is great'"), or an error row.
    binary_text = pa.array([b"The pan is great", b"\xff\xfe is broken"], pa.binary())
    pq.write_table(pa.table({"text": binary_text}), folder / "b/part-0.parquet")
    expected |= {
        ("a/part-0.parquet", 1): (OK, "@a/part-0.parquet:1"),
        ("a/part-0.parquet", 2): (OK, "@a/part-0.parquet:2"),
        ("b/part-0.parquet", 1): (OK, "@b/part-0.parquet:1"),
        ("b/part-0.parquet", 2): (ERR, "invalid_utf8"),
    }

    ids = [  # after a UTF-8 byte-order mark
        {"id": 1, "text": "The pan is great"},
        {"id": "1", "text": "The pan is awful"},  # the same id as 1
        {"id": 2.0, "text": "The lamp is fine"},  # a whole float is the id "2"
        {"id": 2.5, "text": "The lamp is fine"},
        {"id": "", "text": "The lamp is fine"},
        {"id": " \t", "text": "The lamp is fine"},
        {"id": "@c/ids.jsonl:8", "text": "The lamp is fine"},  # the form of line 8's generated id
        {"text": "The tent is great"},
        b'{"id": "u", "text": "caf\xe9 is bad"}',  # Latin-1, not UTF-8
        {"id": True, "text": "The lamp is fine"},
    ]
    (folder / "c/ids.jsonl").write_bytes(BOM + jsonl_bytes(ids))
    codes = [OK, "duplicate_id", OK, "invalid_id", "invalid_id", "invalid_id", "invalid_id", OK, "invalid_utf8"]
    codes.append("invalid_id")
    oks = {1: "1", 3: "2", 8: "@c/ids.jsonl:8"}
    expected |= {("c/ids.jsonl", n): (OK, oks[n]) if code == OK else (ERR, code) for n, code in enumerate(codes, 1)}

    long_field = "word " * 30_000  # 150 KB: over Python's default CSV limit (128 KiB), under max_field_bytes
    (folder / "d/reviews.csv").write_bytes(
        BOM
        + b"id,text\r\n"
        + b"c1,The kettle is awful\r\n"
        + b"c2,caf\xe9 is bad\r\n"
        + f"c3,{long_field}\r\n".encode()
        + f'c4,"{"x" * 300_000}\n{"y" * 10}"\r\n'.encode()  # over max_field_bytes, quoted over two lines
        + b"c5,The lamp is great\r\n"  # read on after it
    )
    expected |= {
        ("d/reviews.csv", 2): (OK, "c1"),
        ("d/reviews.csv", 3): (ERR, "invalid_utf8"),
        ("d/reviews.csv", 4): (ERR, "context_length_exceeded"),  # read whole, then refused as a prompt
        ("d/reviews.csv", 6): (ERR, "field_too_large"),
        ("d/reviews.csv", 7): (OK, "c5"),
    }

    # Float ids as pandas writes a nullable integer column: 7.0 is "7", null is no id.
    floats = pa.table({"id": [7.0, None], "text": ["The lamp is great", "The tent is awful"]})
    pq.write_table(floats, folder / "e/f.parquet")
    expected |= {("e/f.parquet", 1): (OK, "7"), ("e/f.parquet", 2): (OK, "@e/f.parquet:2")}
    return expected


def test_partitioned_mixed_inputs_with_bad_bytes_big_fields_and_tricky_ids(ray_local, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    expected = write_inputs(folder)
    config = JobConfig(
        input=InputConfig(path=str(folder), max_field_bytes=200_000),
        output=OutputConfig(path=str(out), format="jsonl"),
        task=LabelTask(labels=["positive", "negative", "neutral"]),
        pool=PoolConfig(batch_size=4),
    )
    manifest = run_job(config)

    def key(row: dict) -> tuple[str, int]:
        return row["source"].removeprefix(f"file://{folder}/"), row["line"]

    results, errors = read_results(out), read_errors(out)
    got = [(key(r), (OK, r["id"])) for r in results] + [(key(e), (ERR, e["code"])) for e in errors]
    assert len(got) == len(dict(got)), "a row has more than one result or error row"
    assert dict(got) == expected

    c = manifest["counts"]
    assert (c["input"], c["ok"], c["errors"], c["accounted"]) == (len(expected), len(results), len(errors), True)
    by_id = {r["id"]: r for r in results}
    # the binary text was the same prompt as the same text stored as a string
    same = by_id["@a/part-0.parquet:1"], by_id["@b/part-0.parquet:1"]
    assert same[0]["prompt_tokens"] == same[1]["prompt_tokens"] and same[0]["label"] == same[1]["label"]

    error = {key(e): e for e in errors}
    assert error[("c/ids.jsonl", 2)]["error"].startswith("duplicate id '1'")
    assert "invalid UTF-8 in line 9 at byte 24 of the line" in error[("c/ids.jsonl", 9)]["error"]
    assert error[("c/ids.jsonl", 9)]["raw"] == '{"id": "u", "text": "caf\\xe9 is bad"}'
    assert "got 2.5" in error[("c/ids.jsonl", 4)]["error"] and "got a boolean" in error[("c/ids.jsonl", 10)]["error"]
    assert error[("c/ids.jsonl", 5)]["error"] == error[("c/ids.jsonl", 6)]["error"] == "column 'id' is empty"
    assert "has the form '@<path>:<line>'" in error[("c/ids.jsonl", 7)]["error"]
    assert "invalid UTF-8 in line 3 at byte 6 of the line" in error[("d/reviews.csv", 3)]["error"]
    assert "larger than input.max_field_bytes (200000 bytes) in lines 5-6" in error[("d/reviews.csv", 6)]["error"]
    assert "column 'text' in row 2 is not UTF-8 text" in error[("b/part-0.parquet", 2)]["error"]


def test_openai_batch_custom_id_must_not_be_empty(ray_local, tmp_path):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    line = {"method": "POST", "url": "/v1/chat/completions", "body": body}
    lines = [{"custom_id": custom_id, **line} for custom_id in ("a", "", " ")]
    src = write_jsonl(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "out"
    config = JobConfig(input=InputConfig(path=str(src)), output=OutputConfig(path=str(out)), task=BatchTask())
    manifest = run_job(config)
    assert [line["custom_id"] for line in read_jsonl(out / "output.jsonl")] == ["a"]
    errors = sorted(read_jsonl(out / "errors.jsonl"), key=lambda e: e["error"]["line"])
    assert [(e["custom_id"], e["error"]["line"], e["error"]["code"]) for e in errors] == [
        (None, 2, "missing_custom_id"),
        (None, 3, "missing_custom_id"),
    ]
    c = manifest["counts"]
    assert (c["input"], c["ok"], c["errors"], c["accounted"]) == (3, 1, 2, True)
