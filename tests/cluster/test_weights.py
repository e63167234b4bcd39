"""The weights' fetch (cluster/weights.py) on real files: fsspec ``file://`` sources, the same code path as abfs://;
and ``hf://`` sources through the real huggingface_hub client (2.4.0) against tests/cluster/fake_hub.py, a stand-in
for the Hugging Face Hub, which cannot be reached from here. It mirrors the endpoints and shapes that client calls,
each cited there by huggingface_hub source line: repo info with the resolved ``sha`` (hf_api.py 3205), the paginated
tree listing with ``lfs`` oids and git blob ids (hf_api.py 4023, utils/_pagination.py), ``resolve`` downloads with a
302 to a CDN URL for LFS files and ``Range`` requests (file_download.py ``hf_hub_url``), and its error headers
(utils/_http.py ``hf_raise_for_status``, 826)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phifleet.cluster.weights import MARKER, TOKEN_SECRET_ENV, FetchError, fetch, main, marker_matches
from tests.cluster.fake_hub import FakeHub


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


# --- hf:// sources -------------------------------------------------------------------------------------------------
PHI4 = "microsoft/phi-4"
TOKEN = "hf_fakeTokenThatMustNeverBePrinted"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def phi4_files(version: int = 1) -> dict[str, bytes]:
    """A small Phi-4-shaped repo: LFS shards, git-stored config and tokenizer files, a subfolder."""
    return {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "config.json": b'{"model_type": "phi3", "version": %d}' % version,
        SHARDS[0]: bytes(range(256)) * 1024 * version,  # 256 KiB
        SHARDS[1]: bytes(reversed(range(256))) * 300,
        "tokenizer/tokenizer.json": b'{"added_tokens": []}',
    }


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake hub as HF_ENDPOINT, no token in the environment, two entries per tree page (pagination)."""
    with FakeHub(token=TOKEN, page_size=2) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", TOKEN_SECRET_ENV):
            monkeypatch.delenv(name, raising=False)
        yield fake


def no_marker_anywhere(root: Path) -> bool:
    return not list(root.rglob(MARKER)) and not [p for p in root.rglob("*") if "partial" in p.name]


def test_a_hub_fetch_is_pinned_to_the_resolved_commit_and_checked_against_the_hubs_sums(hub, tmp_path):
    repo = hub.repo(PHI4, lfs=set(SHARDS))
    first = repo.commit(phi4_files(1))
    models = tmp_path / "models"
    assert fetch(f"hf://{PHI4}", models / "phi-4", "main") == "fetched"
    marker = json.loads((models / "phi-4" / MARKER).read_text())
    assert (marker["source"], marker["revision"], marker["commit"], marker["verified"]) == (
        f"hf://{PHI4}",
        "main",
        first,
        "hub",
    )
    assert sorted(marker["files"]) == sorted(phi4_files())
    assert marker["files"][SHARDS[0]]["checked"] == ["size", "lfs-sha256"]
    assert marker["files"]["config.json"]["checked"] == ["size", "git-blob-sha1"]
    for name, data in phi4_files(1).items():
        assert (models / "phi-4" / name).read_bytes() == data
    # "main" was resolved once: the listing (paginated) and every download asked for the commit itself
    reads = [r.path for r in hub.requests if "/tree/" in r.path or "/resolve/" in r.path]
    assert len([p for p in reads if "/tree/" in p]) > 1 and all(f"/{first}" in p for p in reads)
    assert any(r.path.startswith("/cdn/") for r in hub.requests)  # LFS files came through the redirect

    # main moves on: the marked copy is not touched, and not even compared with the Hub
    second = repo.commit(phi4_files(2))
    asked = len(hub.requests)
    assert fetch(f"hf://{PHI4}", models / "phi-4", "main") == "present" and len(hub.requests) == asked
    # a damaged copy of main is not replaced by what main is now: that could be other weights under replicas
    with (models / "phi-4" / SHARDS[1]).open("r+b") as fh:
        fh.truncate(10)
    with pytest.raises(FetchError, match=rf"holds commit {first} of hf://{PHI4}@main, which now resolves to {second}"):
        fetch(f"hf://{PHI4}", models / "phi-4", "main")
    assert (models / "phi-4" / "config.json").read_bytes() == phi4_files(1)["config.json"]

    # a pinned commit (as --revision or in the URL) fetches exactly that commit
    assert fetch(f"hf://{PHI4}", models / "phi-4-a", first) == "fetched"
    assert (models / "phi-4-a" / SHARDS[0]).read_bytes() == phi4_files(1)[SHARDS[0]]
    assert fetch(f"hf://{PHI4}@{second}", models / "phi-4-b") == "fetched"
    assert json.loads((models / "phi-4-b" / MARKER).read_text())["commit"] == second
    with pytest.raises(FetchError, match="names revision 'v1' but --revision is 'main'"):
        fetch(f"hf://{PHI4}@v1", models / "phi-4-c", "main")
    with pytest.raises(FetchError, match="the Hub has no revision 'v9'"):
        fetch(f"hf://{PHI4}", models / "phi-4-c", "v9")
    assert not (models / "phi-4-c").exists()


def test_a_subfolder_of_a_repo_is_fetched_on_its_own(hub, tmp_path):
    repo = hub.repo(PHI4, lfs=set(SHARDS))
    repo.commit(phi4_files())
    assert fetch(f"hf://{PHI4}/tokenizer", tmp_path / "tok", "main") == "fetched"
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [MARKER, "tokenizer.json"]


@pytest.mark.parametrize(
    ("name", "why"),
    [(SHARDS[1], "does not match the Hub's LFS sha256"), ("config.json", "does not match the Hub's blob id")],
)
def test_bytes_that_do_not_match_the_hubs_sums_fail_closed(hub, tmp_path, capsys, name, why):
    repo = hub.repo(PHI4, lfs=set(SHARDS))
    repo.commit(phi4_files())
    good = phi4_files()[name]
    repo.corrupt[name] = bytes([good[0] ^ 1]) + good[1:]  # same size: only the hash can tell
    dest = tmp_path / "models" / "phi-4"
    assert main(["--source", f"hf://{PHI4}", "--dest", str(dest), "--revision", "main"]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("phifleet weights:")]
    assert f"{name}: " in line and why in line
    assert not dest.exists() and no_marker_anywhere(tmp_path)


def test_a_dropped_download_resumes_with_a_range_request_and_is_still_verified(hub, tmp_path, monkeypatch):
    monkeypatch.setattr("phifleet.cluster.weights._CHUNK", 64 << 10)  # the cut comes after two whole reads
    repo = hub.repo(PHI4, lfs=set(SHARDS), drop_once={SHARDS[0]})
    repo.commit(phi4_files())
    assert fetch(f"hf://{PHI4}", tmp_path / "phi-4", "main") == "fetched"
    assert (tmp_path / "phi-4" / SHARDS[0]).read_bytes() == phi4_files()[SHARDS[0]]
    data = phi4_files()[SHARDS[0]]
    cdn = f"/cdn/{hashlib.sha256(data).hexdigest()}"
    assert [r.range for r in hub.requests if r.path == cdn] == [None, f"bytes={len(data) // 2}-"]


def test_a_401_without_a_token_is_one_line_naming_the_token_secret(hub, tmp_path, capsys):
    hub.repo(PHI4, lfs=set(SHARDS), private=True).commit(phi4_files())
    dest = tmp_path / "models" / "phi-4"
    assert main(["--source", f"hf://{PHI4}", "--dest", str(dest)]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("phifleet weights:")]
    assert "answered 401" in line and "no HF_TOKEN was set" in line
    assert "model.fetch.tokenSecret.name" in line
    assert "kubectl create secret generic hf-token --from-literal=token=hf_..." in line
    assert not dest.exists() and no_marker_anywhere(tmp_path)


def test_a_refused_token_names_its_secret_and_is_never_printed(hub, tmp_path, capsys, monkeypatch):
    hub.repo(PHI4, private=True).commit(phi4_files())
    monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenNotToBePrinted")
    monkeypatch.setenv(TOKEN_SECRET_ENV, "hf-token/token")
    assert main(["--source", f"hf://{PHI4}", "--dest", str(tmp_path / "phi-4")]) == 1
    out = capsys.readouterr()
    (line,) = [x for x in out.err.splitlines() if x.startswith("phifleet weights:")]
    assert "answered 401" in line and "Secret 'hf-token' (key 'token')" in line
    assert "hf_wrongTokenNotToBePrinted" not in out.out + out.err


def test_the_token_is_sent_as_a_bearer_token_and_appears_nowhere_else(hub, tmp_path, capsys, caplog, monkeypatch):
    hub.repo(PHI4, lfs=set(SHARDS), private=True).commit(phi4_files())
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level("DEBUG")
    dest = tmp_path / "phi-4"
    assert main(["--source", f"hf://{PHI4}", "--dest", str(dest), "--revision", "main"]) == 0
    to_hub = [r for r in hub.requests if r.path.startswith(("/api/models/", f"/{PHI4}/resolve/"))]
    assert to_hub and {r.authorization for r in to_hub} == {f"Bearer {TOKEN}"}
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text + (dest / MARKER).read_text()
    assert "fetched" in out.out


def test_fetch_config_token_secret():
    from pydantic import ValidationError

    from phifleet.cluster.weights import FetchConfig

    assert FetchConfig().token_secret.key == "token" and FetchConfig().token_secret.name == ""
    assert FetchConfig.model_validate({"tokenSecret": {"name": "hf-token"}}).token_secret.name == "hf-token"
    for bad in ({"name": "HF_Token"}, {"name": "hf-token", "key": "a/b"}, {"name": "x", "value": "hf_..."}):
        with pytest.raises(ValidationError):
            FetchConfig.model_validate({"tokenSecret": bad})
