"""Label jobs end to end on a local Ray with the tiny model."""

import json

import pyarrow.parquet as pq
import pytest

from phifleet.jobs.config import InputConfig, JobConfig, LabelTask, OutputConfig, PoolConfig
from phifleet.jobs.pipeline import run_job
from tests.jobs.conftest import REVIEWS, read_errors, read_jsonl, read_results, write_jsonl

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

LABELS = ["positive", "negative", "neutral"]


def label_job(input_path, out, **kw) -> JobConfig:
    return JobConfig(
        input=InputConfig(path=str(input_path), **kw.pop("input", {})),
        output=OutputConfig(path=str(out), **kw.pop("output", {})),
        task=LabelTask(labels=LABELS),
        pool=PoolConfig(batch_size=kw.pop("batch_size", 32)),
    )


def test_labels_bundled_reviews_with_ids_kept_to_their_rows(ray_local, tmp_path):
    """Accuracy against each row's own expected label proves ids stay matched through the block shuffle."""
    out = tmp_path / "out"
    manifest = run_job(label_job(REVIEWS, out))
    expected = {r["id"]: r["label"] for r in read_jsonl(REVIEWS)}
    results = read_results(out)
    assert sorted(r["id"] for r in results) == sorted(expected)
    accuracy = sum(r["label"] == expected[r["id"]] for r in results) / len(results)
    assert accuracy >= 0.9, accuracy
    row = results[0]
    assert set(row["logprobs"]) == set(LABELS) and 0 < row["probability"] <= 1
    assert row["model"] == manifest["model"] and row["prompt_tokens"] > 0
    c = manifest["counts"]
    assert (c["input"], c["ok"], c["errors"], c["accounted"]) == (300, 300, 0, True)
    assert sum(manifest["labels"].values()) == 300
    assert manifest["throughput"]["rows_per_s"] > 0 and manifest["startup_seconds"] > 0
    processing = manifest["processing"]["rows_per_s"]  # 0 when the blocks finished within a second of each other
    assert processing == 0 or processing >= manifest["throughput"]["rows_per_s"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["counts"] == c and on_disk["job"]["task"]["labels"] == LABELS


def test_malformed_rows_go_to_errors_with_line_numbers(ray_local, tmp_path):
    rows = [
        {"id": "a", "text": "The kettle is great"},
        "{not json",
        {"id": "b", "body": "no text column"},
        {"id": "c", "text": 42},
        "",  # blank lines are not rows
        {"id": "d", "text": "word " * 3000},  # over the tiny model's 2048-token window
        {"id": "a", "text": "a duplicate id"},
        [1, 2, 3],
        {"text": "no id: gets @file:line"},
        {"id": "e", "text": "   "},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    manifest = run_job(label_job(src, out))
    results = {r["id"]: r for r in read_results(out)}
    errors = {e["line"]: e for e in read_errors(out)}
    assert set(results) == {"a", "@in.jsonl:9"}
    assert results["a"]["line"] == 1  # the first occurrence wins
    assert sorted(errors) == [2, 3, 4, 6, 7, 8, 10]
    assert "malformed JSON" in errors[2]["error"] and errors[2]["raw"] == "{not json"
    assert "missing text column 'text'" in errors[3]["error"]
    assert "must be a string" in errors[4]["error"]
    assert "context window" in errors[6]["error"] and errors[6]["code"] == "context_length_exceeded"
    assert "duplicate id 'a'" in errors[7]["error"]
    assert "JSON object" in errors[8]["error"]
    assert "is empty" in errors[10]["error"]
    c = manifest["counts"]
    assert (c["input"], c["ok"], c["errors"], c["accounted"]) == (9, 2, 7, True)


def test_parquet_csv_directory_glob_and_file_url(ray_local, tmp_path):
    import csv

    import pyarrow as pa

    data = read_jsonl(REVIEWS)[:40]
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(data[:20]), folder / "part1.parquet")
    with (folder / "part2.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        w.writerows(data[20:])
        fh.write('bad-row,"too",many,fields\n')
    (folder / "notes.txt").write_text("ignored: not a data file\n")

    out = tmp_path / "dir"
    manifest = run_job(label_job(folder, out))
    assert sorted(r["id"] for r in read_results(out)) == sorted(r["id"] for r in data)
    [bad] = read_errors(out)
    assert bad["source"].endswith("part2.csv") and bad["line"] == 22 and "expected 3 fields, got 4" in bad["error"]
    assert manifest["counts"]["input"] == 41

    out = tmp_path / "glob"
    run_job(label_job(f"file://{folder}/*.parquet", out, output={"format": "jsonl"}))
    assert sorted(r["id"] for r in read_results(out)) == sorted(r["id"] for r in data[:20])


def test_a_stage_list_that_does_not_line_up_fails_before_the_job_starts(tmp_path):
    from phifleet.jobs.stages import StageWiringError, default_stages
    from phifleet.jobs.stages.base import OUTPUT

    out = tmp_path / "out"

    def without_replica(spec):
        return [stage for stage in default_stages(spec) if stage.name != "replica"]

    with pytest.raises(StageWiringError, match=rf"stage 'write' needs columns \['{OUTPUT}'\] that stage 'prepare'"):
        run_job(label_job(REVIEWS, out), stages=without_replica)
    assert not out.exists()  # nothing read, nothing written
