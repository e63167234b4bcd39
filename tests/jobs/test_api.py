"""The Python API on Ray Datasets: phifleet.label / generate / extract / batch take a Dataset (or paths), return one.

The fast tests check validation, `import phifleet` and the three steps on pyarrow tables without Ray; the slow ones
run the lazy Dataset on a real local Ray with the tiny model, and compare with the file job for the same rows.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pyarrow as pa
import pytest
from pydantic import ValidationError

import phifleet
from phifleet.jobs.config import GenerateTask
from phifleet.jobs.errors import JobInputError
from tests.jobs.conftest import REVIEWS, ROOT, read_jsonl, read_results, write_jsonl

LABELS = ["positive", "negative", "neutral"]
LABEL_OUTPUTS = ["label", "probability", "logprobs", "prompt_tokens", "error", "error_code"]


# --- fast: no Ray -----------------------------------------------------------------------------------------------


def test_import_phifleet_stays_cheap_and_the_api_loads_on_first_use():
    code = (
        "import sys, phifleet\n"
        "heavy = [m for m in ('ray', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert {'label', 'generate', 'batch', 'EngineConfig', 'PoolConfig'} <= set(dir(phifleet))\n"
        "from phifleet import PoolConfig\n"
        "assert PoolConfig(batch_size=3).batch_size == 3 and 'ray' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert phifleet.label.__module__ == "phifleet.jobs.api"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = phifleet.nope


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: phifleet.label("unread.jsonl", labels=["only-one"]), "labels"),
        (lambda: phifleet.label("unread.jsonl", labels=["a", " a "]), "labels"),
        (lambda: phifleet.label("unread.jsonl", labels=LABELS, pool={"batch_size": 0}), "batch_size"),
        (lambda: phifleet.label("unread.jsonl", labels=LABELS, pool={"replicas": 2}), "replicas"),
        (lambda: phifleet.label("unread.jsonl", labels=LABELS, model={"dtype": "int3"}), "dtype"),
        (lambda: phifleet.label("unread.jsonl", labels=LABELS, model=42), "EngineConfig"),
        (lambda: phifleet.label("unread.jsonl", labels=LABELS, keep_columns="id"), "keep_columns"),
        (lambda: phifleet.generate("unread.jsonl", "{text}", temperature=3.0), "temperature"),
        (lambda: phifleet.generate("unread.jsonl", "{text}", max_tokens=0), "max_tokens"),
        (lambda: phifleet.batch("unread.jsonl", limits={"max_n": 0}), "max_n"),
    ],
)
def test_bad_values_raise_pydantic_errors_naming_the_field_before_anything_is_read(call, field):
    with pytest.raises(ValidationError, match=field):
        call()


def test_what_ds_may_be(tmp_path):
    with pytest.raises(TypeError, match=r"ray\.data\.Dataset, a path or a list of paths"):
        phifleet.label(42, labels=LABELS)
    with pytest.raises(JobInputError, match="matches no files"):
        phifleet.label(tmp_path / "missing.jsonl", labels=LABELS)
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / "b.csv").write_text("text\nx\n")
    with pytest.raises(JobInputError, match=r"mixes formats \['csv', 'jsonl'\]"):
        phifleet.label([tmp_path / "a.jsonl", str(tmp_path / "b.csv")], labels=LABELS)


def test_generate_defaults_are_the_task_defaults():
    params = inspect.signature(phifleet.generate).parameters
    for name in ("max_tokens", "temperature", "top_p", "top_k", "seed", "system"):
        assert params[name].default == GenerateTask.model_fields[name].default, name


def _steps(task, keep):
    """The API's three stages (the file jobs' prepare step, replica and a columns sink) run by hand on pyarrow
    tables: what the Ray Dataset does per batch."""
    from phifleet.engine.loading import resolve_model
    from phifleet.jobs import api
    from phifleet.jobs.stages import Replica, StageSpec
    from phifleet.jobs.stages.columns import to_columns
    from phifleet.jobs.stages.prepare import prepare_dataset

    config = api.job_config(task, None, {"batch_size": 4})
    model = resolve_model(config.engine)
    spec = StageSpec(config.model_dump_json(), str(model.path), model.context_window, model.served_name)
    replica = Replica(spec)

    def run(table: pa.Table) -> pa.Table:
        return to_columns(replica(prepare_dataset(table, spec, keep)), spec)

    return run


def test_label_steps_on_pyarrow_batches_without_ray():
    from phifleet.jobs.api import job_config
    from phifleet.jobs.config import LabelTask
    from phifleet.jobs.kinds import job_kind
    from phifleet.jobs.stages.prepare import content_id
    from phifleet.jobs.stages.prepare import dataset_row_id as api_row_id

    rows = [
        {"id": 7, "text": "The kettle is great", "label": "positive", "stars": 5},
        {"id": 8, "label": "negative", "stars": 1},  # no text: an error row
        {"text": "No id here", "stars": None},
    ]
    out = _steps(LabelTask(labels=LABELS), ("id", "label", "absent"))(pa.Table.from_pylist(rows))
    # The input column 'label' is kept as input_label: an output has its name. A listed column a block lacks is null.
    assert out.column_names == ["id", "input_label", "absent", *LABEL_OUTPUTS]
    assert out.schema.field("logprobs").type == pa.struct([(name, pa.float64()) for name in LABELS])
    ok, bad, no_id = out.to_pylist()
    assert ok["id"] == 7 and ok["input_label"] == "positive" and ok["label"] in LABELS and ok["error"] is None
    assert set(ok["logprobs"]) == set(LABELS) and 0 < ok["probability"] <= 1 and ok["prompt_tokens"] > 0
    assert bad["label"] is None and bad["logprobs"] is None and bad["error"] == "missing text column 'text'"
    assert bad["error_code"] == "invalid_request" and no_id["error"] is None

    config = job_config(LabelTask(labels=LABELS), None, None)
    kind = job_kind(config, "phi4-tiny")
    assert api_row_id(kind, {"id": 7, "text": "x"}) == "7"  # the file job's id for the same row
    hashed = api_row_id(kind, {"text": "No id here"})
    assert hashed == content_id({"text": "No id here"}) == api_row_id(kind, {"text": "No id here"})
    assert hashed.startswith("row-") and hashed != api_row_id(kind, {"text": "No id here", "stars": 1})


def test_extract_steps_give_typed_columns_and_enum_probabilities():
    """phifleet.extract's steps: the schema's fields as columns after the input's, probabilities over the enum, an
    object cut by max_tokens that row's error (null fields)."""
    from phifleet.engine.tiny.build import review_schema
    from phifleet.jobs.config import ExtractTask

    schema = review_schema(["sentiment", "product"], LABELS)
    rows = [{"id": 1, "text": "The kettle is awful."}, {"id": 2, "text": "I love this lamp, it is great."}]
    out = _steps(ExtractTask(schema=schema), ("id",))(pa.Table.from_pylist(rows))
    assert out.column_names[:3] == ["id", "sentiment", "product"]
    assert out.schema.field("sentiment_logprobs").type == pa.struct([(name, pa.float64()) for name in LABELS])
    kettle, lamp = out.to_pylist()
    assert (kettle["sentiment"], lamp["sentiment"]) == ("negative", "positive") and kettle["error"] is None
    assert json.loads(kettle["json"]) == {"sentiment": "negative", "product": kettle["product"]}
    assert 0.5 < kettle["sentiment_probability"] <= 1
    (cut,) = _steps(ExtractTask(schema=schema, max_tokens=3), ("id",))(pa.Table.from_pylist(rows[:1])).to_pylist()
    assert cut["sentiment"] is None and cut["error_code"] == "incomplete_output"
    assert "extract" in phifleet.__all__ and inspect.signature(phifleet.extract).parameters["schema"]


def test_batch_steps_take_json_bodies_and_a_malformed_one_is_that_rows_error():
    from phifleet.jobs.config import BatchTask

    rows = [
        {
            "custom_id": "c1",
            "method": "POST",
            "url": "/v1/completions",
            "body": json.dumps({"prompt": "Hi", "max_tokens": 3}),
        },
        {"custom_id": "c2", "method": "POST", "url": "/v1/completions", "body": '{"prompt": '},
    ]
    ok, broken = _steps(BatchTask(), ("custom_id",))(pa.Table.from_pylist(rows)).to_pylist()
    assert ok["status_code"] == 200 and json.loads(ok["response"])["object"] == "text_completion"
    assert broken["status_code"] is None and broken["error_code"] == "invalid_json" and "body" in broken["error"]


# --- slow: a real local Ray -----------------------------------------------------------------------------------


def _reviews(n: int) -> list[dict]:
    """Reviews with extra columns of other types; ids stay matched to their own columns through Ray."""
    return [{**r, "source_name": f"shop-{i % 3}", "stars": i} for i, r in enumerate(read_jsonl(REVIEWS)[:n])]


def _by_id(rows: list[dict]) -> dict:
    return {r["id"]: r for r in rows}


@pytest.mark.slow
def test_label_a_dataset_lazily_with_its_columns_and_the_file_jobs_labels(ray_local, tmp_path):
    import ray

    from phifleet.jobs.config import InputConfig, JobConfig, LabelTask, OutputConfig, PoolConfig
    from phifleet.jobs.pipeline import run_job

    rows = _reviews(24)
    marker = tmp_path / "read"

    def touch(batch):  # proves the input is read only once the output is consumed
        marker.touch()
        return batch

    bad_row = {"id": "bad", "text": None, "label": None, "source_name": "shop-x", "stars": -1}  # null: no text
    ds = ray.data.from_items([*rows, bad_row]).map_batches(touch, batch_format="pyarrow")
    out = phifleet.label(ds, labels=LABELS, pool={"batch_size": 8})
    assert isinstance(out, ray.data.Dataset) and not marker.exists()

    got = _by_id(out.take_all())
    assert marker.exists() and len(got) == 25
    # The input column 'label' is kept as input_label: an output has its name.
    assert all(list(r) == ["id", "text", "input_label", "source_name", "stars", *LABEL_OUTPUTS] for r in got.values())
    bad = got.pop("bad")
    assert bad["error"] == "missing text column 'text'" and bad["label"] is None and bad["stars"] == -1
    for r in rows:
        row = got[r["id"]]
        assert (row["text"], row["input_label"], row["source_name"], row["stars"]) == (
            r["text"],
            r["label"],
            r["source_name"],
            r["stars"],
        )
        assert row["error"] is None and row["error_code"] is None and set(row["logprobs"]) == set(LABELS)

    src = write_jsonl(tmp_path / "in.jsonl", rows)
    run_job(
        JobConfig(
            input=InputConfig(path=str(src)),
            output=OutputConfig(path=str(tmp_path / "job")),
            task=LabelTask(labels=LABELS),
            pool=PoolConfig(batch_size=8),
        )
    )
    job = {r["id"]: r["label"] for r in read_results(tmp_path / "job")}
    assert job == {rid: row["label"] for rid, row in got.items()}


@pytest.mark.slow
def test_keep_no_columns_or_listed_ones_reading_jsonl_or_a_parquet_folder(ray_local, tmp_path):
    import ray

    rows = _reviews(6)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    none_kept = phifleet.label(path, labels=LABELS, keep_columns=False, pool={"batch_size": 4}).take_all()
    assert len(none_kept) == 6 and all(list(r) == LABEL_OUTPUTS for r in none_kept)

    import pyarrow.parquet as pq

    folder = tmp_path / "parquet"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    listed = phifleet.label([folder], labels=LABELS, keep_columns=["stars", "id"], pool={"batch_size": 4})
    got = listed.take_all()
    assert all(list(r) == ["stars", "id", *LABEL_OUTPUTS] for r in got)
    assert sorted((r["id"], r["stars"]) for r in got) == sorted((r["id"], r["stars"]) for r in rows)

    with pytest.raises(ValueError, match=r"keep_columns names columns the input does not have: \['nope'\]"):
        phifleet.label(ray.data.from_items(rows), labels=LABELS, keep_columns=["id", "nope"])


@pytest.mark.slow
def test_generate_with_a_seed_reproduces_per_row(ray_local):
    import ray

    rows = [
        {"id": 1, "product": "kettle", "tone": "negative"},
        {"id": 2, "product": "lamp", "tone": "positive"},
        {"id": None, "product": "tent", "tone": "glowing"},  # no id: seeded by a hash of its content
        {"id": 4, "product": "chair", "tone": None},  # no 'tone' for the template: an error row
    ]
    ds = ray.data.from_items(rows)

    def run():
        out = phifleet.generate(
            ds, "Write a {tone} review of a {product}.", max_tokens=8, temperature=0.9, seed=11, pool={"batch_size": 2}
        )
        return {r["product"]: r for r in out.take_all()}

    first, second = run(), run()
    assert first == second
    chair = first.pop("chair")
    assert chair["text"] is None and "needs column 'tone'" in chair["error"] and chair["id"] == 4
    for r in first.values():
        assert list(r)[:3] == ["id", "product", "tone"]
        assert isinstance(r["text"], str) and r["finish_reason"] in ("stop", "length") and r["error"] is None
        assert r["prompt_tokens"] > 0 and 0 <= r["completion_tokens"] <= 8


@pytest.mark.slow
def test_batch_rows_answered_with_a_bad_line_alone_failing(ray_local):
    import ray
    from openai.types import Completion
    from openai.types.chat import ChatCompletion

    from tests.jobs.test_generate_and_batch import BATCH_LINES

    lines = [line for line in BATCH_LINES if isinstance(line, dict)]  # bodies become one Arrow struct type
    out = phifleet.batch(ray.data.from_items(lines), pool={"batch_size": 4}).take_all()
    assert len(out) == len(lines)
    got = {r.get("custom_id"): r for r in out}
    assert list(got["chat-1"])[:4] == ["custom_id", "method", "url", "body"]
    for cid in ("chat-1", "chat-n2", "cmpl-1"):
        assert got[cid]["status_code"] == 200 and got[cid]["error"] is None
    chat = ChatCompletion.model_validate_json(got["chat-1"]["response"])
    assert chat.model == "phi4-tiny" and chat.usage.completion_tokens == got["chat-1"]["completion_tokens"] <= 8
    assert [c.index for c in ChatCompletion.model_validate_json(got["chat-n2"]["response"]).choices] == [0, 1]
    assert Completion.model_validate_json(got["cmpl-1"]["response"]).usage.completion_tokens == 5

    refused = json.loads(got["bad-url"]["response"])  # as OpenAI's error file: a 400 with its body
    assert got["bad-url"]["status_code"] == 400 and refused["error"]["param"] == "url"
    assert got["bad-tokens"]["status_code"] == 400 and got["bad-tokens"]["error_code"] == "invalid_request"
    no_id = got[None]
    assert no_id["status_code"] is None and no_id["response"] is None and no_id["error_code"] == "missing_custom_id"
