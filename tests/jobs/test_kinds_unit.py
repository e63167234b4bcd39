"""The job kinds' pure parts and the stage list's wiring: no Ray, no model (a word-level tokenizer counts tokens)."""

import dataclasses
import json
import typing
from collections import Counter

import pyarrow as pa
import pytest

from phifleet.engine.errors import ContextLengthExceededError
from phifleet.engine.types import Prompt
from phifleet.engine.validation import RequestValidator
from phifleet.jobs.config import BatchTask, GenerateTask, InputConfig, JobConfig, LabelTask, OutputConfig, Task
from phifleet.jobs.kinds import KINDS, BatchKind, LabelKind, Tally, job_kind
from phifleet.jobs.rows import RowError, explicit_id, generated_id
from phifleet.jobs.sinks import ShardWriter, load_committed
from phifleet.jobs.sources import RAW_SCHEMA, input_root, iter_rows, read_files, read_options, relative_path
from phifleet.jobs.stages import (
    SUMMARY_SCHEMA,
    StageSpec,
    StageWiringError,
    build_stages,
    check_stages,
    default_stages,
    output_schema,
)
from phifleet.jobs.stages.base import CODE, ERROR, ID, OUTPUT, PARAM, PROMPT
from phifleet.jobs.stages.prepare import prepare_files
from phifleet.jobs.stages.replica import ANSWERED
from tests.word_tokenizer import save_word_tokenizer, word_tokenizer

LABELS = ["positive", "negative"]
WINDOW = 64


def config(task, tmp_path=None, **input_kw) -> JobConfig:
    out = str(tmp_path / "out") if tmp_path else "out"
    return JobConfig(input=InputConfig(path="in.jsonl", **input_kw), output=OutputConfig(path=out), task=task)


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(word_tokenizer(LABELS), WINDOW)


def test_every_task_kind_has_a_handler():
    kinds = {model.model_fields["kind"].default for model in typing.get_args(typing.get_args(Task)[0])}
    assert set(KINDS) == kinds == {"label", "generate", "extract", "batch"}
    assert isinstance(job_kind(config(LabelTask(labels=LABELS)), "m"), LabelKind)
    assert isinstance(job_kind(config(BatchTask()), "m"), BatchKind)


def test_row_ids():
    label = job_kind(config(LabelTask(labels=LABELS)), "m")
    assert label.row_id({"id": 7}, "in.jsonl", 3) == "7"
    assert label.row_id({"text": "x"}, "a/in.jsonl", 3) == "@a/in.jsonl:3"
    assert label.row_id({"id": None, "text": "x"}, "in.jsonl", 3) == "@in.jsonl:3"  # null: no id
    with pytest.raises(RowError, match="column 'id' must be a string or a whole number, got a JSON array"):
        label.row_id({"id": [1]}, "in.jsonl", 1)
    no_column = job_kind(config(LabelTask(labels=LABELS), id_column=None), "m")
    assert no_column.row_id({"id": "a"}, "in.jsonl", 4) == "@in.jsonl:4"
    batch = job_kind(config(BatchTask()), "m")
    assert batch.row_id({"custom_id": "c"}, "f", 1) == "c" and batch.row_id({"custom_id": 3}, "f", 1) is None
    for empty in ("", "  \t"):
        with pytest.raises(RowError, match="custom_id must be a non-empty string") as err:
            batch.row_id({"custom_id": empty}, "f", 1)
        assert err.value.code == "missing_custom_id"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", "a"), (1, "1"), (1.0, "1"), (-0.0, "0"), (10**20, "100000000000000000000"), (" x ", " x "), ("@a", "@a")],
)
def test_explicit_ids_are_strings(value, expected):
    assert explicit_id(value, "id") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "must be a string or a whole number, got a boolean"),
        (1.5, "got 1.5"),
        (float("nan"), "got nan"),
        (float("inf"), "got inf"),
        ({"a": 1}, "got a JSON object"),
        ("", "column 'id' is empty"),
        (" \t", "column 'id' is empty"),
        ("@in.jsonl:3", "has the form '@<path>:<line>'"),
        ("@a/b c.csv:12", "has the form"),
    ],
)
def test_unusable_explicit_ids_are_row_errors_naming_the_column(value, message):
    with pytest.raises(RowError, match=message) as err:
        explicit_id(value, "id")
    assert (err.value.code, err.value.param) == ("invalid_id", "id")


def test_generated_ids_are_relative_to_the_input_root(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "part-0.parquet").write_bytes(b"")
    root = f"file://{tmp_path}"
    assert input_root(str(tmp_path)) == input_root(f"{root}/") == root
    assert input_root(f"{tmp_path}/*/part-*.parquet") == input_root(f"{root}/a*/x/*.csv") == root
    assert input_root(str(tmp_path / "a" / "part-0.parquet")) == f"{root}/a"
    assert relative_path(f"{root}/a/part-0.parquet", root) == "a/part-0.parquet"
    assert relative_path(f"{root}/a/part-0.parquet", None) == "part-0.parquet"
    assert relative_path("s3://other/x.csv", root) == "other/x.csv"
    assert generated_id("a/part-0.parquet", 3) == "@a/part-0.parquet:3"


def read_raw(path, fmt, **kw) -> list[dict]:
    return list(iter_rows(f"file://{path}", fmt, path.name, **kw))


def test_jsonl_and_csv_decoding_say_what_happened(tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"text": "bom"}\n{"text": "caf\xe9"}\r\n\n{"text": "ok \xe2\x80\xa8 sep"}\n')
    rows = read_raw(jsonl, "jsonl")
    assert [(r["line"], r["read_code"]) for r in rows] == [(1, None), (2, "invalid_utf8"), (4, None)]
    assert json.loads(rows[0]["raw"]) == {"text": "bom"} and rows[1]["raw"] == '{"text": "caf\\xe9"}'
    assert rows[1]["read_error"] == "invalid UTF-8 in line 2 at byte 13 of the line (byte 32 of the file): e9"
    assert json.loads(rows[2]["raw"])["text"] == "ok \u2028 sep"  # U+2028 is no line break in JSONL

    csv_file = tmp_path / "in.csv"
    big = "x" * 2000
    csv_file.write_bytes(
        b"\xef\xbb\xbfid,text\r\n"
        b'1,"two\nlines"\r\n'
        b"2,caf\xe9\r\n"
        + f'3,"{big}\n{big}"\r\n'.encode()
        + b"4,"
        + "\u00e9".encode() * 600  # 600 characters, 1200 bytes
        + b"\r\n5,fine\r\n\r\n6,a,b\r\n"
    )
    rows = read_raw(csv_file, "csv", max_field_bytes=1024)
    by_line = {r["line"]: r for r in rows}
    assert [(r["line"], r["read_code"]) for r in rows] == [
        (3, None),
        (4, "invalid_utf8"),
        (6, "field_too_large"),
        (7, "field_too_large"),
        (8, None),
        (10, "malformed_row"),
    ]
    assert json.loads(by_line[3]["raw"]) == {"id": "1", "text": "two\nlines"}  # the BOM is not in the header
    assert by_line[4]["read_error"].startswith("invalid UTF-8 in line 4 at byte 5 of the line")
    assert by_line[6]["read_error"] == "a field is larger than input.max_field_bytes (1024 bytes) in lines 5-6"
    assert by_line[7]["read_error"].endswith("in line 7")
    assert json.loads(by_line[8]["raw"]) == {"id": "5", "text": "fine"}
    assert by_line[10]["read_error"] == "expected 2 fields, got 3"


def test_parquet_binary_text_is_decoded_or_the_row_says_why(tmp_path):
    import pyarrow.parquet as pq

    text = pa.array([b"great pan", b"\xffbad", b"fine"], pa.binary())
    blob = pa.array([b"\x89PNG", b"ok", None], pa.binary())
    pq.write_table(pa.table({"id": [1.0, 2.0, None], "text": text, "blob": blob}), tmp_path / "in.parquet")
    rows = read_raw(tmp_path / "in.parquet", "parquet", text_columns=("text", "id"))
    records = [json.loads(r["raw"]) for r in rows]
    assert records[0] == {"id": 1.0, "text": "great pan", "blob": "base64:iVBORw=="}
    assert records[2] == {"id": None, "text": "fine", "blob": None}
    assert [r["read_code"] for r in rows] == [None, "invalid_utf8", None]
    assert rows[1]["read_error"] == "column 'text' in row 2 is not UTF-8 text: invalid byte 0: ff"

    # a *string* column holding bytes that are not UTF-8 (other writers do not check): that row alone fails
    bad = pa.Array.from_buffers(pa.string(), 2, pa.array([b"ok", b"\xfe"], pa.binary()).buffers())
    pq.write_table(pa.table({"text": bad}), tmp_path / "strings.parquet")
    rows = read_raw(tmp_path / "strings.parquet", "parquet")
    assert [r["read_code"] for r in rows] == [None, "invalid_utf8"] and json.loads(rows[0]["raw"]) == {"text": "ok"}


def test_label_kind(validator):
    kind = job_kind(config(LabelTask(labels=LABELS)), "phi-4")
    prepared = kind.prepare({"text": "great kettle"}, "r1", validator)
    assert prepared.id == "r1" and "great kettle" in Prompt.from_json(prepared.prompt).text
    for record, message in [
        ({}, "missing text column 'text'"),
        ({"text": 3}, "must be a string"),
        ({"text": " "}, "is empty"),
    ]:
        with pytest.raises(RowError, match=message) as err:
            kind.prepare(record, "r", validator)
        assert err.value.param == "text"
    with pytest.raises(ContextLengthExceededError, match="context window is 64 tokens"):
        kind.prepare({"text": "word " * 60}, "r", validator)
    output = {
        "label": "negative",
        "probability": 0.9,
        "logprobs": {"negative": -0.1, "positive": -2.0},
        "prompt_tokens": 9,
    }
    row = kind.result_row("r1", output, "in.jsonl", 1)
    assert list(row["logprobs"]) == LABELS and row["model"] == "phi-4" and row["line"] == 1
    assert kind.tally(output) == Tally(9, 0, "negative")
    manifest: dict = {}
    kind.finish(manifest, Counter({"negative": 2}))
    assert manifest["labels"] == {"positive": 0, "negative": 2}


def test_generate_kind(validator):
    task = GenerateTask(prompt_template="Review a {product}.", system="Be kind.", max_tokens=8, seed=3)
    kind = job_kind(config(task), "m")
    prepared = kind.prepare({"product": "lamp"}, "k", validator)
    text = Prompt.from_json(prepared.prompt).text
    assert text.startswith("<|im_start|>system<|im_sep|>Be kind.") and "Review a lamp." in text
    with pytest.raises(RowError, match="needs column 'product'") as err:
        kind.prepare({"tone": "x"}, "k", validator)
    assert err.value.param == "product"
    with pytest.raises(RowError, match="cannot be filled"):
        job_kind(config(GenerateTask(prompt_template="{0}")), "m").prepare({}, "k", validator)
    seeds = {kind.request("p", rid).params.seed for rid in ("a", "a", "b")}
    assert len(seeds) == 2  # per row id, whatever the batch
    long = job_kind(config(GenerateTask(prompt_template="{t}", max_tokens=60)), "m")
    with pytest.raises(ContextLengthExceededError, match="and 60 more are requested"):
        long.prepare({"t": "a b c d e f"}, "k", validator)


def test_batch_kind(validator):
    kind = job_kind(config(BatchTask()), "m")
    line = {
        "custom_id": "c",
        "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
    }
    prepared = kind.prepare(line, "c", validator)
    assert json.loads(prepared.request)["url"] == "/v1/chat/completions" and "hi" in prepared.prompt
    with pytest.raises(RowError) as err:
        kind.prepare({**line, "custom_id": None}, None, validator)
    assert err.value.code == "missing_custom_id"
    with pytest.raises(RowError, match="method must be POST"):
        kind.prepare({**line, "method": "GET"}, "c", validator)
    with pytest.raises(RowError) as err:
        kind.prepare({**line, "body": {"messages": [], "n": 2}}, "c", validator)
    assert err.value.param == "messages"
    with pytest.raises(ContextLengthExceededError):  # 100 completion tokens do not fit a 64-token window
        kind.prepare(
            {**line, "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}}, "c", validator
        )

    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m", "choices": [], "usage": {}}
    ok = kind.result_row("c", {"body": body, "usage": {"prompt_tokens": 4, "completion_tokens": 2}}, "f", 3)
    assert ok["custom_id"] == "c" and ok["response"]["status_code"] == 200 and ok["id"].startswith("batch_req_")
    assert kind.tally({"body": body, "usage": {"prompt_tokens": 4, "completion_tokens": 2}}) == Tally(4, 2)
    refused = kind.error_row("c", RowError("max_tokens: bad", param="max_tokens"), "f", 5, "{}")
    assert refused["response"]["status_code"] == 400 and refused["response"]["body"]["error"]["param"] == "max_tokens"
    assert refused["response"]["body"]["error"]["message"] == "line 5: max_tokens: bad"
    broken = kind.error_row(None, RowError("malformed JSON", code="invalid_json"), "f", 6, "{")
    assert broken["response"] is None and broken["error"]["line"] == 6 and broken["error"]["code"] == "invalid_json"
    assert kind.output_format == "jsonl"


def test_a_file_that_cannot_be_read_on_is_one_error_row_after_the_rows_read(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "header.csv").write_bytes(b"id,t\xe9xt\n1,a\n")
    urls = pa.table({"url": [f"file://{tmp_path}/sub/broken.parquet", f"file://{tmp_path}/header.csv"]})
    opts = read_options(InputConfig(path=str(tmp_path)))
    rows = [r for t in read_files(urls, chunk_rows=8, **opts) for r in t.to_pylist()]
    assert [(r["path"], r["line"], r["read_code"]) for r in rows] == [
        ("sub/broken.parquet", 1, "unreadable_file"),
        ("header.csv", 1, "invalid_utf8"),
    ]
    assert rows[1]["read_error"].startswith("unreadable file from line 1: the CSV header is not UTF-8: invalid UTF-8")


def raw_batch(rows: list[tuple[int, str, str | None]]) -> pa.Table:
    data = {"source": ["in.jsonl"] * len(rows), "line": [r[0] for r in rows], "raw": [r[1] for r in rows]}
    data |= {"read_error": [r[2] for r in rows], "path": ["in.jsonl"] * len(rows), "read_code": [None] * len(rows)}
    return pa.Table.from_pydict(data, schema=RAW_SCHEMA)


def test_prepare_stage_gives_one_row_per_input_row_except_committed_ones(tmp_path):
    model_dir = save_word_tokenizer(tmp_path / "tok")
    spec = StageSpec(config(LabelTask(labels=LABELS)).model_dump_json(), str(model_dir), WINDOW, "m")
    rows = [
        (1, json.dumps({"id": "a", "text": "fine"}), None),
        (2, "{oops", None),
        (3, "", "expected 3 fields, got 4"),
        (4, json.dumps({"id": "a", "text": "again"}), None),
        (5, json.dumps({"id": "b", "text": "word " * 70}), None),
        (6, json.dumps({"id": "c", "text": "done before"}), None),
    ]
    skip = (frozenset({("in.jsonl", 6)}), frozenset({("in.jsonl", 4)}))
    out = prepare_files(raw_batch(rows), spec, skip).to_pylist()
    assert [r["line"] for r in out] == [1, 2, 3, 4, 5]
    assert [r[CODE] for r in out] == [
        None,
        "invalid_json",
        "malformed_row",
        "duplicate_id",
        "context_length_exceeded",
    ]
    assert out[0][PROMPT] and out[0][ID] == "a" and out[3][ERROR].startswith("duplicate id 'a'")
    assert "context window is 64 tokens" in out[4][ERROR] and out[4][PARAM] == "prompt"
    assert out[3]["raw"] == rows[3][1] and {r["source"] for r in out} == {"in.jsonl"}  # for the error rows


def test_shard_writer_writes_results_errors_and_tallies(tmp_path):
    kind = job_kind(config(LabelTask(labels=LABELS), tmp_path), "m")
    output = json.dumps(
        {"label": "positive", "probability": 1.0, "logprobs": {"positive": 0.0, "negative": -9.0}, "prompt_tokens": 5}
    )
    batch = {
        "source": ["in.jsonl", "in.jsonl"], "line": [1, 2], "id": ["a", None], "raw": ["{}", "{x"],
        "error": [None, "malformed JSON"], "error_code": [None, "invalid_json"], "param": [None, None],
        "output": [output, None],
    }  # fmt: skip
    summary = ShardWriter(kind).write(batch)
    assert (summary["ok"], summary["errors"], summary["prompt_tokens"], json.loads(summary["labels"])) == (
        1, 1, 5, {"positive": 1},
    )  # fmt: skip
    state = load_committed(str(tmp_path / "out"))
    assert state.keys == {("in.jsonl", 1), ("in.jsonl", 2)} and state.labels == {"positive": 1}


def spec_for(task) -> StageSpec:
    return StageSpec(config(task).model_dump_json(), "model-dir", WINDOW, "m")


@pytest.mark.parametrize("task", [LabelTask(labels=LABELS), GenerateTask(prompt_template="{t}"), BatchTask()])
def test_the_default_stages_line_up(task):
    stages = default_stages(spec_for(task))
    assert [s.name for s in stages] == ["prepare", "replica", "write"]
    check_stages(stages, RAW_SCHEMA.names, SUMMARY_SCHEMA.names, ("skip_ref",))


@pytest.mark.parametrize("task", [LabelTask(labels=LABELS), GenerateTask(prompt_template="{t}"), BatchTask()])
def test_file_jobs_and_the_python_api_run_one_stage_list_but_for_their_ends(task):
    """The CLI's stages and the API's: the same replica stage (class, pool, batch), prepare and sink per row source."""
    files, dataset = build_stages(spec_for(task), "files"), build_stages(spec_for(task), "dataset", keep=("id",))
    assert [s.name for s in files] == ["prepare", "replica", "write"]
    assert [s.name for s in dataset] == ["prepare", "replica", "columns"]
    assert files[1] == dataset[1]
    check_stages(dataset, ["id", "text"], output_schema(config(task)).names)


def test_a_stage_list_that_does_not_line_up_fails_naming_the_stage_and_columns():
    prepare_stage, replica, write = default_stages(spec_for(BatchTask()))
    with pytest.raises(StageWiringError, match=rf"stage 'write' needs columns \['{OUTPUT}'\] that stage 'prepare'"):
        check_stages([prepare_stage, write], RAW_SCHEMA.names, SUMMARY_SCHEMA.names, ("skip_ref",))
    with pytest.raises(StageWiringError, match=rf"stage 'replica' needs columns .*'{PROMPT}'.* that the input"):
        check_stages([replica, write], RAW_SCHEMA.names, SUMMARY_SCHEMA.names, ("skip_ref",))
    with pytest.raises(StageWiringError, match=r"reads columns \['shard', 'ok'"):
        check_stages([prepare_stage, replica], RAW_SCHEMA.names, SUMMARY_SCHEMA.names, ("skip_ref",))
    with pytest.raises(StageWiringError, match=r"needs run inputs \['skip_ref'\]"):
        check_stages([prepare_stage, replica, write], RAW_SCHEMA.names, SUMMARY_SCHEMA.names)
    renamed = dataclasses.replace(replica, produces=ANSWERED.remove(ANSWERED.get_field_index(OUTPUT)))
    with pytest.raises(StageWiringError, match=rf"'write' needs columns \['{OUTPUT}'\]"):
        check_stages([prepare_stage, renamed, write], RAW_SCHEMA.names, SUMMARY_SCHEMA.names, ("skip_ref",))
