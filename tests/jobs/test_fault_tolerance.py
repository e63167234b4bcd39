"""The promises under failure: every row ends in exactly one result or error, across crashes and re-runs.

These run the job as a user would (a separate process with its own embedded Ray), so a crash is a real
process death, not an exception. tests/jobs/faults.py wraps the real stages to cause it.
"""

import json
from collections import Counter

import pytest
import yaml

from phifleet.jobs.sinks import load_committed
from tests.jobs.conftest import REVIEWS, read_errors, read_jsonl, read_results, run_cli, write_jsonl

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)


def job_file(tmp_path, src, out, batch_size=16) -> str:
    config = {
        "input": {"path": str(src)},
        "output": {"path": str(out)},
        "task": {"kind": "label", "labels": ["positive", "negative", "neutral"]},
        "pool": {"batch_size": batch_size},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_resume_after_the_driver_dies(tmp_path):
    rows = [*read_jsonl(REVIEWS)[:160], "{broken line"]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    config = job_file(tmp_path, src, out)

    crashed = run_cli("tests.jobs.faults", "--config", config, "--kill-driver-after-shards", "3")
    assert crashed.returncode == -9, crashed.stderr[-2000:]  # SIGKILLed mid-job
    partial = load_committed(str(out))
    assert 0 < len(partial.keys) < 161  # some rows committed, not all

    resumed = run_cli("phifleet.jobs", "--config", config)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["resumed"] == len(partial.keys) and c["processed"] == 161 - len(partial.keys)
    assert (c["input"], c["ok"], c["errors"], c["accounted"]) == (161, 160, 1, True)

    ids = Counter(r["id"] for r in read_results(out))
    assert set(ids) == {r["id"] for r in rows[:160]} and set(ids.values()) == {1}  # all, once
    assert [e["line"] for e in read_errors(out)] == [161]
    assert "done by an earlier run" in resumed.stdout

    again = run_cli("phifleet.jobs", "--config", config)  # a finished job re-run does nothing and loses nothing
    assert again.returncode == 0
    c = json.loads((out / "manifest.json").read_text())["counts"]
    assert (c["processed"], c["ok"], c["errors"]) == (0, 160, 1)


def test_a_replica_that_dies_is_restarted_and_its_batch_retried(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", read_jsonl(REVIEWS)[:96])
    out = tmp_path / "out"
    marker = tmp_path / "crashed"
    config = job_file(tmp_path, src, out)
    proc = run_cli("tests.jobs.faults", "--config", config, "--crash-replica-at", "2", "--marker", str(marker))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # the replica process really died mid-job
    ids = Counter(r["id"] for r in read_results(out))
    assert len(ids) == 96 and set(ids.values()) == {1}
    assert not read_errors(out)


def test_uncommitted_shards_are_removed_before_a_rerun(tmp_path):
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / "part-orphan.parquet").write_bytes(b"half written by a crashed run")
    (out / "errors").mkdir()
    (out / "errors" / "part-x.jsonl.tmp-1234").write_text("{}")
    state = load_committed(str(out))
    assert not state.keys
    assert not list((out / "results").iterdir()) and not list((out / "errors").iterdir())


def test_cli_flags_and_config_file_are_the_same_job(tmp_path):
    out = tmp_path / "out"
    dumped = run_cli(
        "phifleet",
        "label",
        str(REVIEWS),
        "--labels",
        "positive,negative,neutral",
        "--output",
        str(out),
        "--batch-size",
        "100",
        "--dump-config",
    )
    assert dumped.returncode == 0, dumped.stderr
    config_path = tmp_path / "job.yaml"
    config_path.write_text(dumped.stdout)
    from phifleet.jobs.config import JobConfig

    config = JobConfig.from_file(config_path)
    assert config.task.labels == ["positive", "negative", "neutral"] and config.pool.batch_size == 100

    ran = run_cli("phifleet.jobs", "--config", str(config_path))
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "300 rows -> 300 ok, 0 errors" in ran.stdout and "labels: positive" in ran.stdout
    # The summary reports start-up apart from the rate once rows flow; Ray Data's operator chatter stays out.
    assert "start-up" in ran.stdout and "Running Dataset" not in ran.stderr + ran.stdout
    assert "constructor arguments in the object store" not in ran.stderr  # Ray's core_worker notice: only with -v


def test_bad_config_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "input": {"path": "x"},
                "output": {"path": "y"},
                "task": {"kind": "label", "labels": ["a", "b"]},
                "pool": {"min_replicas": 3, "max_replicas": 1},
            }
        )
    )
    proc = run_cli("phifleet.jobs", "--config", str(bad))
    assert proc.returncode == 2 and "max_replicas (1) must be >= min_replicas (3)" in proc.stderr
    missing = run_cli(
        "phifleet", "label", str(tmp_path / "nothing*.jsonl"), "--labels", "a,b", "--output", str(tmp_path / "o")
    )
    assert missing.returncode == 2 and "matches no files" in missing.stderr
