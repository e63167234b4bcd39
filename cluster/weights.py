"""Model weights that arrive, verified: the fetch a Ray pod's init container runs before the engine loads them.

``python -m phifleet.cluster.weights --source URL --dest DIR [--revision REV]`` copies a model folder from any
fsspec URL (``abfs://container@account.dfs.core.windows.net/phi-4`` with AKS workload identity, ``s3://``,
``gs://``, ``file://``) or from the Hugging Face Hub (``hf://microsoft/phi-4``) into ``DIR`` and exits non-zero,
leaving no marker, if any step fails. Fail-closed:

- every file is streamed into a hidden partial folder beside ``DIR`` (this fetch's own, named by its lock token)
  and checked against the source's listing (size) and, when the source folder has a ``SHA256SUMS`` file
  (``sha256sum`` format), against its sha256; a file the list names but the source lacks, or one it does not
  name, is an error;
- from the Hub, the revision (``--revision``, or ``hf://repo@REV``; default ``main``) is resolved to its commit
  once and everything is listed and downloaded at that commit, so a branch that moves mid-fetch cannot mix two
  commits; the Hub's own tree listing is the checksum list: each LFS file's sha256 (its LFS oid) and every other
  file's git blob id (sha1 of ``blob <size>\\0<bytes>``) must match the bytes. The token is ``HF_TOKEN`` (the
  chart fills it from the Secret ``model.fetch.tokenSecret``) and nothing else; it is never printed;
- the marker ``.phifleet-weights.json`` (source, revision, the Hub commit, each file's size and sha256) is written
  into the partial folder, and renaming that folder to ``DIR`` is the commit: ``DIR`` is complete or absent;
- weights are never replaced under running replicas: a ``DIR`` holding another source or revision, or files
  phifleet did not put there, is refused (a new revision goes to its own ``--dest``); only a damaged copy of the
  same source and revision (a file of the wrong size) is replaced, and from the Hub only by the same commit (a
  branch that moved since is refused: pin a commit and give it its own ``--dest``);
- pods that start together take turns through a lock beside ``DIR`` (jobs/lock.py: owner, heartbeat, stale
  takeover); the one that waited finds ``DIR`` complete and copies nothing.

The chart renders the command (templates/_helpers.tpl ``phifleet.initContainers``) from ``model.fetch``, the
``FetchConfig`` model below.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from phifleet.jobs.durable import fsync_dir
from phifleet.jobs.lock import OutputLock, OutputLockedError

log = logging.getLogger("phifleet.weights")

MARKER = ".phifleet-weights.json"
CHECKSUMS = "SHA256SUMS"
LOCK_WAIT_S = 5.0
_CHUNK = 8 << 20
HUB_SCHEME = "hf://"
TOKEN_ENV = "HF_TOKEN"
# "<secret name>/<key>", set by the chart beside HF_TOKEN so that a refusal names the Secret (never its value).
TOKEN_SECRET_ENV = "PHIFLEET_WEIGHTS_TOKEN_SECRET"
HUB_TOKEN_HOWTO = "kubectl create secret generic hf-token --from-literal=token=hf_..."
HUB_TIMEOUT_S = 30.0  # resolving the revision (the client's own default there is no timeout at all)
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SECRET_NAME = r"^$|^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class TokenSecret(BaseModel):
    """The Kubernetes Secret holding a Hugging Face Hub token (``model.fetch.tokenSecret``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        default="",
        pattern=_SECRET_NAME,
        description="Secret in the release's namespace holding a Hub token for hf:// sources (private or gated "
        "repos; also lifts anonymous rate limits). The fetch init container gets it as HF_TOKEN through a "
        "secretKeyRef: the token never appears in values or rendered objects. Empty: anonymous.",
    )
    key: str = Field(default="token", pattern=r"^[-._a-zA-Z0-9]+$", description="Key of the token in that Secret.")


class FetchConfig(BaseModel):
    """Where a model's weights come from (the chart's ``model.fetch``; empty ``source``: no fetch)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(
        default="",
        description="fsspec URL of the model folder (abfs://container@account.dfs.core.windows.net/phi-4 with "
        "workload identity, s3://, gs://, file://) or a Hugging Face Hub repo (hf://microsoft/phi-4, "
        "hf://org/repo/sub/folder); empty: the weights must already be on the volume.",
    )
    revision: str = Field(
        default="",
        description="For hf:// sources the Hub revision (a commit sha, or a branch/tag, resolved once to the commit "
        "the marker records; empty: main; hf://repo@REV says the same). Otherwise your version label for what the "
        "source holds. With the source it keys the marker, so a new revision is fetched again.",
    )
    path: str = Field(
        default="phi-4",
        pattern=r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*)*$",
        description="Folder under the model mount path the weights go to (the engine's `model` is "
        "<mountPath>/<path>); a new revision needs a new path: weights are never replaced under running replicas.",
    )
    token_secret: TokenSecret = Field(default_factory=TokenSecret, alias="tokenSecret")


class FetchError(RuntimeError):
    """A fetch that cannot be trusted: nothing is marked complete."""


@dataclass(frozen=True)
class Expected:
    """What one source file must be: its listed size and, where the source states them, its content hashes."""

    size: int
    sha256: str | None = None  # the Hub's LFS oid (SHA256SUMS is read separately)
    git_sha1: str | None = None  # the Hub's git blob id of a file stored in git itself (not LFS)


@dataclass(frozen=True)
class Source:
    """An opened source: its filesystem, the folder in it, and for the Hub the commit everything is read at."""

    fs: fsspec.AbstractFileSystem
    root: str
    commit: str = ""
    open_kw: dict[str, Any] = field(default_factory=dict)


_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def parse_checksums(text: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <path>``, ``*`` for binary mode) as {relative path: hex}."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            raise FetchError(f"{CHECKSUMS} line {number} is not '<sha256>  <path>': {line[:120]!r}")
        name = match.group(2).removeprefix("./")
        if name in sums:
            raise FetchError(f"{CHECKSUMS} line {number} lists {name!r} a second time")
        sums[name] = match.group(1).lower()
    return sums


def marker_matches(dest: Path, source: str, revision: str) -> bool:
    """Whether ``dest`` holds a complete fetch of this source and revision, every file at its recorded size."""
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("source") != source or marker.get("revision") != revision:
        return False
    files: dict[str, Any] = marker.get("files") or {}
    for name, info in files.items():
        try:
            if (dest / name).stat().st_size != info["size"]:
                return False
        except OSError:
            return False
    return bool(files)


def _safe_name(name: str) -> str:
    """A source file's path relative to the folder, refused if it could land outside the copy."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise FetchError(f"the source has a file named {name!r}, which cannot be copied safely")
    return name


def _hub_sums(name: str, info: dict[str, Any]) -> dict[str, str]:
    """The Hub's hash of one listed file: LFS files by their sha256 oid, the rest by their git blob id."""
    lfs = info.get("lfs")
    if lfs:
        sha256 = str(lfs.get("sha256", "")).lower()
        if not _HEX64.fullmatch(sha256):
            raise FetchError(f"{name}: the Hub lists it in LFS without a sha256 ({sha256!r})")
        return {"sha256": sha256}
    blob = str(info.get("blob_id") or "").lower()
    if not _HEX40.fullmatch(blob):
        raise FetchError(f"{name}: the Hub lists no git blob id for it ({blob!r}): nothing to check it against")
    return {"git_sha1": blob}


def _listing(src: Source) -> dict[str, Expected]:
    """{path relative to the source folder: what it must be} for every file under it."""
    fs, root = src.fs, src.root
    if not fs.isdir(root):
        raise FetchError(f"the source {root!r} is not a folder (or cannot be read)")
    found = fs.find(root, detail=True)
    prefix = root.rstrip("/") + "/"
    files: dict[str, Expected] = {}
    for path, info in found.items():
        if info.get("type") != "file":
            continue
        name = _safe_name(path[len(prefix) :] if path.startswith(prefix) else path)
        files[name] = Expected(int(info["size"]), **(_hub_sums(name, info) if src.commit else {}))
    if not files:
        raise FetchError(f"the source {root!r} has no files")
    return files


def _copy_one(src: Source, remote: str, local: Path, want: Expected) -> tuple[int, str, str | None]:
    """Stream one file, hashing as it goes (one pass over the bytes); (size, sha256, git blob sha1), fsynced.

    The git blob id hashes a ``blob <size>`` header first; the listed size stands in for the real one (a file of
    another size fails the size check anyway)."""
    digest, size = hashlib.sha256(), 0
    git = hashlib.sha1(b"blob %d\0" % want.size, usedforsecurity=False) if want.git_sha1 else None
    local.parent.mkdir(parents=True, exist_ok=True)
    with src.fs.open(remote, "rb", **src.open_kw) as fh, local.open("wb") as dst:
        while chunk := fh.read(_CHUNK):
            dst.write(chunk)
            digest.update(chunk)
            if git is not None:
                git.update(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest(), git.hexdigest() if git is not None else None


def _copy(src: Source, partial: Path, listing: dict[str, Expected]) -> dict[str, Any]:
    """Copy every listed file into ``partial``; return {name: {size, sha256, checked}} after checking each."""
    root = src.root.rstrip("/")
    sums = None
    if CHECKSUMS in listing:
        sums = parse_checksums(src.fs.cat_file(f"{root}/{CHECKSUMS}", **src.open_kw).decode())
        names = set(listing) - {CHECKSUMS}
        missing, unlisted = sorted(set(sums) - names), sorted(names - set(sums))
        if missing or unlisted:
            raise FetchError(f"{CHECKSUMS} does not match the source: missing {missing}, not listed {unlisted}")
    files: dict[str, Any] = {}
    for name, want in sorted(listing.items()):
        if name == CHECKSUMS:
            continue
        got, digest, git = _copy_one(src, f"{root}/{name}", partial / name, want)
        if got != want.size:
            raise FetchError(f"{name}: copied {got} bytes, the source lists {want.size}")
        checked = ["size"]
        if sums is not None:
            if digest != sums[name]:
                raise FetchError(f"{name}: sha256 {digest} does not match {CHECKSUMS} ({sums[name]})")
            checked.append(CHECKSUMS)
        if want.sha256 is not None:
            if digest != want.sha256:
                raise FetchError(f"{name}: sha256 {digest} does not match the Hub's LFS sha256 ({want.sha256})")
            checked.append("lfs-sha256")
        if want.git_sha1 is not None:
            if git != want.git_sha1:
                raise FetchError(f"{name}: git blob sha1 {git} does not match the Hub's blob id ({want.git_sha1})")
            checked.append("git-blob-sha1")
        files[name] = {"size": got, "sha256": digest, "checked": checked}
    for folder, _, _ in os.walk(partial):
        fsync_dir(folder)
    return files


def _write_marker(folder: Path, marker: dict[str, Any]) -> None:
    tmp = folder / f"{MARKER}.tmp-{os.getpid()}"
    with tmp.open("w") as fh:
        json.dump(marker, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MARKER)
    fsync_dir(str(folder))


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        return json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _check_way(dest: Path, source: str, revision: str, commit: str) -> bool:
    """Refuse a ``dest`` that may be in use or is not ours; True when it holds a (damaged) copy to replace."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return False
    marker = _read_marker(dest)
    if marker is None:
        raise FetchError(
            f"{dest} exists and holds files phifleet did not fetch (no {MARKER}): move them away, or fetch to "
            "another folder"
        )
    if (marker.get("source"), marker.get("revision")) != (source, revision):
        raise FetchError(
            f"{dest} holds {marker.get('source')}@{marker.get('revision') or '-'}: fetch "
            f"{source}@{revision or '-'} to a folder of its own (model.fetch.path) and point the engine there; "
            "weights are never replaced under replicas that may be reading them"
        )
    if marker.get("commit") and commit and marker["commit"] != commit:
        raise FetchError(
            f"{dest} holds commit {marker['commit']} of {source}@{revision or 'main'}, which now resolves to "
            f"{commit}: pin the commit you want (model.fetch.revision) and fetch it to a folder of its own; "
            "weights are never replaced under replicas that may be reading them"
        )
    return True


def _clear_way(dest: Path, source: str, revision: str, commit: str, aside: Path) -> None:
    """Make room for the new copy at ``dest``, refusing to touch what may be in use or is not ours."""
    if _check_way(dest, source, revision, commit):
        os.replace(dest, aside)  # the same model, damaged: out of the way (removed once the new copy is in place)
    elif dest.exists():
        dest.rmdir()


def _token_hint(status: int, what: str, token: str | None) -> str:
    """One line for a Hub refusal, naming the token Secret (never the token)."""
    secret = os.environ.get(TOKEN_SECRET_ENV, "")
    name, _, key = secret.partition("/")
    if not token:
        return (
            f"the Hub answered {status} for {what} and no {TOKEN_ENV} was set: a private or gated repo needs a "
            f"token; put one in a Secret ({HUB_TOKEN_HOWTO}) and set model.fetch.tokenSecret.name to it"
        )
    origin = f"the token from Secret {name!r} (key {key or 'token'!r})" if name else f"the token in {TOKEN_ENV}"
    return (
        f"the Hub answered {status} for {what} with {origin}: the token is invalid or cannot read this repo (a "
        "gated repo needs its terms accepted by the token's account); fix the Secret (model.fetch.tokenSecret)"
    )


def _open_hub(source: str, revision: str) -> Source:
    """The Hub repo folder ``source`` names, pinned to the commit its revision resolves to now.

    ``revision`` and ``hf://repo@REV`` are the same thing (both set: they must agree; neither: ``main``). The
    endpoint is ``HF_ENDPOINT`` (a mirror, or a test's stand-in) and the token ``HF_TOKEN`` only, read here and
    not at import: no token file or cached login can change what a pod sends."""
    from huggingface_hub import HfApi, HfFileSystem, constants
    from huggingface_hub.errors import HfHubHTTPError, HfUriError, RevisionNotFoundError
    from huggingface_hub.utils import parse_hf_uri

    try:
        uri = parse_hf_uri(source)
    except HfUriError as exc:
        raise FetchError(f"{source} is not a Hub repo URL (hf://org/repo[@revision][/folder]): {exc}") from None
    if uri.type not in ("model", "dataset"):
        raise FetchError(f"{source}: only model and dataset repos can be fetched (a {uri.type} has no commits)")
    if uri.revision and revision and uri.revision != revision:
        raise FetchError(f"{source} names revision {uri.revision!r} but --revision is {revision!r}: give one")
    wanted = revision or uri.revision or constants.DEFAULT_REVISION
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    token = os.environ.get(TOKEN_ENV) or None
    what = f"{uri.type} {uri.id}@{wanted}"
    try:
        api = HfApi(endpoint=endpoint, token=token or False)
        info = api.repo_info(uri.id, revision=wanted, repo_type=uri.type, timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise FetchError(_token_hint(status, what, token)) from None
        if isinstance(exc, RevisionNotFoundError):
            raise FetchError(f"the Hub has no revision {wanted!r} in {uri.type} {uri.id}") from None
        raise FetchError(f"the Hub answered {status} for {what}: {str(exc).splitlines()[0]}") from None
    commit = str(info.sha or "")
    if not _HEX40.fullmatch(commit):
        raise FetchError(f"the Hub gave no commit for {what} ({commit!r}): nothing to pin the fetch to")
    if _HEX40.fullmatch(wanted) and commit != wanted:
        raise FetchError(f"asked the Hub for commit {wanted} of {uri.id} and it answered with {commit}")
    if commit != wanted:
        log.info("%s resolves to commit %s", what, commit)
    fs = HfFileSystem(endpoint=endpoint, token=token or False, skip_instance_cache=True)
    prefix = constants.REPO_TYPES_URL_PREFIXES.get(uri.type, "")
    root = f"{prefix}{uri.id}@{commit}" + (f"/{uri.path_in_repo.strip('/')}" if uri.path_in_repo.strip("/") else "")
    # block_size=0: one streamed GET per file (resumed with a Range request if the connection drops), not a range
    # request per block
    return Source(fs, root, commit=commit, open_kw={"block_size": 0})


def _open_source(source: str, revision: str) -> Source:
    if source.startswith(HUB_SCHEME):
        return _open_hub(source, revision)
    fs, root = fsspec.core.url_to_fs(source)
    return Source(fs, root)


def fetch(
    source: str, dest: Path, revision: str = "", lock_wait_s: float = LOCK_WAIT_S, timeout_s: float = 3 * 3600
) -> str:
    """Make ``dest`` a verified copy of ``source``: 'present' (its marker matched, nothing copied) or 'fetched'."""
    dest = Path(os.path.abspath(dest))
    if dest.name in ("", ".", "..") or dest == dest.parent:
        raise FetchError(f"--dest {dest} is not a folder to fetch into")
    if marker_matches(dest, source, revision):
        return "present"
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(str(dest.parent / f".{dest.name}.phifleet-fetch"))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            lock.acquire()
            break
        except OutputLockedError as exc:  # another pod is fetching this folder: wait for it, then read its marker
            if time.monotonic() > deadline:
                raise FetchError(f"gave up after {timeout_s:.0f} s waiting for another fetch of {dest}") from exc
            log.info("another pod is fetching %s; waiting", dest)
            time.sleep(lock_wait_s)
    lock.start_heartbeat()
    partial = dest.parent / f".{dest.name}.partial-{lock.token}"
    aside = dest.parent / f".{dest.name}.replaced-{lock.token}"
    try:
        if marker_matches(dest, source, revision):
            return "present"
        for stale in dest.parent.glob(f".{dest.name}.partial-*"):  # left by fetches that died (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        src = _open_source(source, revision)
        _check_way(dest, source, revision, src.commit)  # refused before copying, not after
        listing = _listing(src)
        partial.mkdir()
        started = time.monotonic()
        files = _copy(src, partial, listing)
        marker = {
            "source": source,
            "revision": revision,
            **({"commit": src.commit} if src.commit else {}),
            "verified": "sha256" if CHECKSUMS in listing else "hub" if src.commit else "size",
            "fetched_at": datetime.now(UTC).isoformat(),
            "seconds": round(time.monotonic() - started, 3),
            "files": files,
        }
        _write_marker(partial, marker)
        if lock.lost:
            raise FetchError(f"lost the lock on {dest} while fetching (another pod took it over): not committing")
        _clear_way(dest, source, revision, src.commit, aside)
        os.replace(partial, dest)  # the commit: dest is complete, marker included, or absent
        fsync_dir(str(dest.parent))
        return "fetched"
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phifleet.cluster.weights", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help=FetchConfig.model_fields["source"].description)
    parser.add_argument("--dest", required=True, type=Path, help="the model folder to fill (on the model volume)")
    parser.add_argument("--revision", default="", help=FetchConfig.model_fields["revision"].description)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # the Hub client's line per request
    try:
        if not args.source:
            raise FetchError("--source is empty")
        outcome = fetch(args.source, args.dest, args.revision)
    except Exception as exc:  # every failure is one line and a non-zero exit: the pod does not start
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        if token := os.environ.get(TOKEN_ENV):  # no library message may carry it into the pod's log
            message = message.replace(token, "***")
        print(f"phifleet weights: {args.source} -> {args.dest}: {message}", file=sys.stderr)
        return 1
    commit = (_read_marker(args.dest) or {}).get("commit")
    at = f", commit {commit}" if commit else ""
    print(f"phifleet weights: {args.dest}: {outcome} ({args.source}@{args.revision or '-'}{at})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
