"""The weights' fetch (cluster/weights.py) on real files: fsspec ``file://`` sources, the same code path as abfs://."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from phifleet.cluster.weights import MARKER, FetchError, fetch, main, marker_matches


def model_folder(root: Path, sums: bool = True, tamper: bool = False) -> Path:
    """A small model folder: two files and a subfolder, with a SHA256SUMS unless ``sums`` is False."""
    files = {"config.json": b'{"n": 1}', "model.safetensors": bytes(range(256)) * 64, "tok/tokenizer.json": b"{}"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    if sums:
        lines = [f"{hashlib.sha256(data).hexdigest()}  {name}" for name, data in files.items()]
        if tamper:
            lines[1] = f"{'0' * 64}  model.safetensors"
        (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


def test_a_verified_fetch_is_marked_and_not_repeated(tmp_path):
    source = model_folder(tmp_path / "src")
    dest = tmp_path / "models" / "phi-4"
    assert fetch(f"file://{source}", dest, "r1") == "fetched"
    marker = json.loads((dest / MARKER).read_text())
    assert marker["verified"] == "sha256" and marker["revision"] == "r1"
    assert sorted(marker["files"]) == ["config.json", "model.safetensors", "tok/tokenizer.json"]
    assert (dest / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    for name in ("config.json", "model.safetensors", "tok/tokenizer.json", "SHA256SUMS"):
        (source / name).unlink()  # the second start copies nothing: it could not
    assert fetch(f"file://{source}", dest, "r1") == "present"


def test_a_sha256_mismatch_fails_and_marks_nothing(tmp_path):
    source = model_folder(tmp_path / "src", tamper=True)
    dest = tmp_path / "models" / "phi-4"
    with pytest.raises(FetchError, match=r"model.safetensors: sha256 .* does not match SHA256SUMS"):
        fetch(f"file://{source}", dest)
    assert not dest.exists()  # the partial copy never became the model folder, and is gone
    assert [p.name for p in dest.parent.iterdir() if "partial" in p.name] == []
    assert main(["--source", f"file://{source}", "--dest", str(dest)]) == 1


def test_a_missing_source_fails_and_a_checksums_file_must_list_every_file(tmp_path, capsys):
    dest = tmp_path / "models" / "phi-4"
    assert main(["--source", f"file://{tmp_path}/nowhere", "--dest", str(dest)]) == 1
    assert "is not a folder" in capsys.readouterr().err and not dest.exists()
    source = model_folder(tmp_path / "src")
    (source / "extra.bin").write_bytes(b"x")
    with pytest.raises(FetchError, match=r"not listed \['extra.bin'\]"):
        fetch(f"file://{source}", dest)


def test_weights_in_use_are_never_replaced_only_a_damaged_copy_of_the_same_revision(tmp_path):
    source = model_folder(tmp_path / "src", sums=False)
    models = tmp_path / "models"
    assert fetch(f"file://{source}", models / "phi-4", "r1") == "fetched"
    assert json.loads((models / "phi-4" / MARKER).read_text())["verified"] == "size"
    # Another revision into the same folder would pull the weights from under running replicas: refused.
    with pytest.raises(FetchError, match=r"holds file://.*@r1: fetch file://.*@r2 to a folder of its own"):
        fetch(f"file://{source}", models / "phi-4", "r2")
    assert marker_matches(models / "phi-4", f"file://{source}", "r1")
    assert fetch(f"file://{source}", models / "phi-4-r2", "r2") == "fetched"
    with (models / "phi-4" / "model.safetensors").open("r+b") as fh:
        fh.truncate(10)  # damaged after it was marked: the same source and revision is fetched again
    assert fetch(f"file://{source}", models / "phi-4", "r1") == "fetched"
    assert (models / "phi-4" / "model.safetensors").stat().st_size == 256 * 64
    assert sorted(p.name for p in models.iterdir() if "partial" in p.name or "replaced" in p.name) == []


def test_a_folder_it_did_not_fetch_is_refused_and_left_alone(tmp_path):
    source = model_folder(tmp_path / "src")
    dest = tmp_path / "models" / "phi-4"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("mine")  # e.g. weights put there by `hf download --local-dir`
    with pytest.raises(FetchError, match="holds files phifleet did not fetch"):
        fetch(f"file://{source}", dest)
    assert (dest / "config.json").read_text() == "mine"


def test_paths_that_could_leave_the_volume_are_refused():
    from pydantic import ValidationError

    from phifleet.cluster.weights import FetchConfig

    assert FetchConfig(path="models/phi-4.v2").path == "models/phi-4.v2"
    for bad in ("..", ".", "phi-4/..", "../etc", "/abs", "a//b"):
        with pytest.raises(ValidationError):
            FetchConfig(path=bad)


def test_pods_that_start_together_fetch_once(tmp_path):
    source = model_folder(tmp_path / "src")
    dest = tmp_path / "models" / "phi-4"
    outcomes: list[str] = []

    def start() -> None:
        outcomes.append(fetch(f"file://{source}", dest, "r1", lock_wait_s=0.05))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["fetched", "present", "present", "present"]
