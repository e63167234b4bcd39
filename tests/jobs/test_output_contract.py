"""The output-folder contract (jobs/output.py): phifleet writes only into a folder it owns, deletes only its own
files, resumes only the same job on the same input, lets one run write at a time, and never trusts a commit it
cannot read back. The job tests run the real pipeline on the session's local Ray, with real files; each checks
that every input row ends in exactly one result or error row.
"""

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from phifleet.jobs.config import InputConfig, JobConfig, LabelTask, OutputConfig, PoolConfig
from phifleet.jobs.errors import JobInputError
from phifleet.jobs.lock import LOCK_FILE, OutputLock, OutputLockedError
from phifleet.jobs.output import MARKER_FILE, OutputIdentityError, OutputNotOwnedError
from phifleet.jobs.pipeline import run_job
from phifleet.jobs.sinks import merge_jsonl
from tests.jobs.conftest import REVIEWS, read_jsonl, run_cli, write_jsonl

LABELS = ["positive", "negative", "neutral"]


def job(src, out, labels=LABELS, batch_size=16, overwrite=False) -> JobConfig:
    return JobConfig(
        input=InputConfig(path=str(src)),
        output=OutputConfig(path=str(out), format="jsonl", overwrite=overwrite),
        task=LabelTask(labels=list(labels)),
        pool=PoolConfig(batch_size=batch_size),
    )


def shard_rows(out, sub: str) -> list[dict]:
    """phifleet's shards only (a user's files may sit beside them)."""
    return [row for f in sorted((out / sub).glob("part-*.jsonl")) for row in read_jsonl(f)]


def assert_each_row_once(out, manifest: dict, lines: int) -> tuple[list[dict], list[dict]]:
    """Every line of the (single-file) input is in exactly one result or error row, and the manifest agrees."""
    results, errors = shard_rows(out, "results"), shard_rows(out, "errors")
    seen = Counter(r["line"] for r in results + errors)
    assert seen == Counter(range(1, lines + 1)), seen
    c = manifest["counts"]
    assert (c["input"], c["ok"], c["errors"], c["accounted"]) == (lines, len(results), len(errors), True)
    assert json.loads((out / "manifest.json").read_text())["counts"] == c
    return results, errors


def tree(path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under ``path``."""
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


@pytest.mark.slow
def test_foreign_files_survive_a_foreign_folder_is_refused_and_overwrite_starts_afresh(ray_local, tmp_path):
    rows = [*read_jsonl(REVIEWS)[:40], "{broken"]
    src = write_jsonl(tmp_path / "in.jsonl", rows)

    theirs = tmp_path / "thesis"  # not phifleet's: refused, untouched, no marker or lock left behind
    (theirs / "drafts").mkdir(parents=True)
    (theirs / "thesis.docx").write_bytes(b"four years of work")
    before = tree(theirs)
    with pytest.raises(OutputNotOwnedError, match=r"not created by phifleet.*drafts/, thesis\.docx.*another --output"):
        run_job(job(src, theirs))
    assert tree(theirs) == before

    out = tmp_path / "out"
    first = run_job(job(src, out))
    assert_each_row_once(out, first, 41)
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["identity"]["config"]["task"]["labels"] == LABELS
    assert [(i["rel"], i["size"]) for i in marker["inputs"]] == [("in.jsonl", src.stat().st_size)]
    assert not (out / LOCK_FILE).exists()  # released

    # The user's files beside phifleet's, and what a crash leaves: an uncommitted shard and a temporary file.
    (out / "results" / "notes").mkdir()
    (out / "results" / "notes" / "todo.txt").write_text("read these")
    (out / "results" / "thesis.docx").write_bytes(b"saved in the wrong folder")
    (out / "errors" / "keep.jsonl").write_text('{"mine": true}\n')
    (out / "README.txt").write_text("what this folder is")
    foreign = {
        k: v
        for k, v in tree(out).items()
        if k.split("/")[-1] in ("notes", "todo.txt", "thesis.docx", "keep.jsonl", "README.txt")
    }
    assert len(foreign) == 5
    (out / "results" / "part-0123456789abcdef0123.jsonl").write_text('{"half": ')
    (out / "results" / "part-aaaa.jsonl.tmp-1f2e3d4c").write_text("{")

    other = ["good", "bad", "meh"]
    with pytest.raises(OutputIdentityError, match=r"task\.labels: \[.positive.*\] -> \[.good., .bad., .meh.\]"):
        run_job(job(src, out, labels=other))  # would have skipped every row and relabelled nothing
    assert json.loads((out / "manifest.json").read_text())["counts"] == first["counts"]  # not overwritten

    fresh = run_job(job(src, out, labels=other, overwrite=True))
    results, errors = assert_each_row_once(out, fresh, 41)
    assert fresh["counts"]["resumed"] == 0 and fresh["counts"]["processed"] == 41
    assert {r["label"] for r in results} <= set(other) and len(errors) == 1
    after = tree(out)
    assert {k: after.get(k, "GONE") for k in foreign} == foreign  # every foreign file and folder, byte for byte
    assert (
        "results/part-0123456789abcdef0123.jsonl" not in after and "results/part-aaaa.jsonl.tmp-1f2e3d4c" not in after
    )
    assert json.loads((out / MARKER_FILE).read_text())["identity"]["config"]["task"]["labels"] == other


@pytest.mark.slow
def test_a_stale_lock_a_moved_input_and_a_truncated_index_entry_then_an_edited_input(ray_local, tmp_path):
    rows = [*read_jsonl(REVIEWS)[:47], "{broken"]
    (tmp_path / "a").mkdir()
    src = write_jsonl(tmp_path / "a" / "in.jsonl", rows)
    out = tmp_path / "out"
    first = run_job(job(src, out))
    assert_each_row_once(out, first, 48)

    # A commit cut short by a crash (or a full disk): the index entry is truncated. Every later run used to fail.
    index = sorted((out / "_index").glob("part-*.json"))
    cut = max(index, key=lambda p: json.loads(p.read_text())["ok"])
    lost = len(json.loads(cut.read_text())["rows"])
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    # The run that wrote it died: its lock names a process of this host that is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"token": "x", "owner": f"crashed pid {dead.pid}", "host": socket.gethostname(), "pid": dead.pid}
    lock.update(pid_ns=os.readlink("/proc/self/ns/pid"), heartbeat_at=time.time())  # a fresh heartbeat, even
    (out / LOCK_FILE).write_text(json.dumps(lock))
    # And the input was moved (same content): its committed rows are still this job's.
    (tmp_path / "b").mkdir()
    moved = src.rename(tmp_path / "b" / "in.jsonl")

    again = run_job(job(moved, out))
    assert again["counts"]["processed"] == lost and again["counts"]["resumed"] == 48 - lost
    assert_each_row_once(out, again, 48)
    assert not (out / LOCK_FILE).exists()
    [record] = json.loads((out / MARKER_FILE).read_text())["inputs"]
    assert record["url"].endswith("/b/in.jsonl") and record["aliases"][0].endswith("/a/in.jsonl")

    # The input edited in place (same size): its committed results are stale, so the run stops and says why.
    text = moved.read_text()
    assert "guitar is efficient." in text
    moved.write_text(text.replace("guitar is efficient.", "guitar is expensive.", 1))
    with pytest.raises(OutputIdentityError, match=r"in\.jsonl changed since this output was started"):
        run_job(job(moved, out))
    assert_each_row_once(out, again, 48)  # nothing was touched


@pytest.mark.slow
def test_a_second_run_on_the_same_output_fails_fast_naming_the_first(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", read_jsonl(REVIEWS))
    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(job(src, out, batch_size=4).model_dump(mode="json", exclude={"address"})))
    first = subprocess.Popen(
        [sys.executable, "-m", "phifleet.jobs", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"},
        cwd=str(REVIEWS.parents[1]),
    )
    try:
        deadline = time.time() + 120
        while not _readable(out / LOCK_FILE):  # it has claimed the folder: it starts Ray and reads next
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.1)
        started = time.time()
        with pytest.raises(OutputLockedError, match=rf"is in use by .*@{socket.gethostname()} pid {first.pid} "):
            run_job(job(src, out, batch_size=4))
        assert time.time() - started < 10  # fast: no Ray, no reading, no clean-up
        second = run_cli("phifleet.jobs", "--config", str(config))  # the CLI says the same, exit status 2
        assert second.returncode == 2 and f"pid {first.pid} " in second.stderr and "in use by" in second.stderr
        assert first.poll() is None  # both refusals happened while the first run was running
    finally:
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["processed"] == 300  # all by the first run; the second did nothing
    assert_each_row_once(out, manifest, 300)
    assert not (out / LOCK_FILE).exists()


def _readable(path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("pid"))
    except (OSError, ValueError):
        return False


def lock_info(host: str, pid: int, heartbeat_age: float) -> str:
    return json.dumps(
        {
            "token": "t",
            "owner": f"u@{host} pid {pid}",
            "host": host,
            "pid": pid,
            "heartbeat_at": time.time() - heartbeat_age,
        }
    )


def test_a_live_lock_is_respected_and_a_silent_one_taken_over(tmp_path):
    """Runs on other hosts: only the heartbeat's age tells whether they are alive."""
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(lock_info("elsewhere", 7, heartbeat_age=5))
    with pytest.raises(OutputLockedError, match=r"in use by u@elsewhere pid 7 .*last heartbeat 5 s ago"):
        OutputLock(str(out)).acquire()
    (out / LOCK_FILE).write_text(lock_info("elsewhere", 7, heartbeat_age=3600))
    lock = OutputLock(str(out))
    lock.acquire()
    assert "no heartbeat for 3600 s" in lock.took_over
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / "_phifleet.lock.takeover").exists()
    lock.release()
    assert not (out / LOCK_FILE).exists()
    (out / LOCK_FILE).write_text('{"token": "half-writ')  # unreadable and fresh: being written right now
    with pytest.raises(OutputLockedError):
        OutputLock(str(out)).acquire()


def test_the_heartbeat_refreshes_the_lock_and_notices_a_takeover(tmp_path):
    out = tmp_path / "out"
    lock = OutputLock(str(out), heartbeat_s=0.05)
    lock.acquire()
    lost = []
    lock.start_heartbeat(on_lost=lambda: lost.append(True))
    first = json.loads((out / LOCK_FILE).read_text())["heartbeat_at"]
    deadline = time.time() + 10
    while json.loads((out / LOCK_FILE).read_text())["heartbeat_at"] == first:
        assert time.time() < deadline
        time.sleep(0.05)
    taken = out / "taken"
    taken.write_text(lock_info("elsewhere", 7, heartbeat_age=0))
    os.replace(taken, out / LOCK_FILE)  # another run took it over (atomically, as runs do)
    while not lost:
        assert time.time() < deadline
        time.sleep(0.05)
    assert "u@elsewhere pid 7" in lock.lost
    lock.release()
    assert json.loads((out / LOCK_FILE).read_text())["host"] == "elsewhere"  # not ours: left alone


def test_openai_output_files_merge_only_phifleets_shards(tmp_path):
    out = tmp_path / "out"
    (out / "errors").mkdir(parents=True)
    (out / "errors" / "part-b.jsonl").write_text('{"n": 2}\n')
    (out / "errors" / "part-a.jsonl").write_text('{"n": 1}\n')
    (out / "errors" / "keep.jsonl").write_text('{"mine": true}\n')
    assert merge_jsonl(str(out), "errors", "errors.jsonl") == 2
    assert read_jsonl(out / "errors.jsonl") == [{"n": 1}, {"n": 2}]
    assert sorted(p.name for p in out.iterdir()) == ["errors", "errors.jsonl"]  # no temporary left


def test_errors_are_job_input_errors():
    """The CLI prints JobInputError's message and exits 2: each refusal is one."""
    assert all(issubclass(e, JobInputError) for e in (OutputLockedError, OutputNotOwnedError, OutputIdentityError))
