"""A stand-in for the Hugging Face Hub, which cannot be reached from here: the few HTTP endpoints the real
``huggingface_hub`` client (2.4.0, pinned in constraints.txt) calls when phifleet fetches ``hf://`` weights.

What it mirrors, and where the client calls it (paths under ``.venv/lib/python3.11/site-packages/huggingface_hub``):

- ``GET /api/models/{repo}/revision/{rev}`` (and ``/api/models/{repo}`` for the default branch): repo info with the
  ``sha`` a branch, tag or commit resolves to (``hf_api.py`` ``model_info``, the URL built at line 3205; the
  response read by ``ModelInfo.__init__``, ``self.sha = kwargs.pop("sha")`` at line 916). ``rev`` arrives
  ``quote(rev, safe="")``-encoded.
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=`` : the tree listing (``hf_api.py``
  ``_iter_repo_tree_pages``, line 4023, the path ``quote(path, safe="")``-encoded), paginated by a
  ``Link: <next>; rel="next"`` header (``utils/_pagination.py`` ``_paginate_pages``/``_get_next_page``). Entries are
  ``{"type": "file", "oid": <git blob sha1>, "size", "path", "lfs": {"oid": <sha256>, "size", "pointerSize"}}``
  (``lfs`` only for LFS files, whose ``oid`` is then the blob id of the pointer file) and
  ``{"type": "directory", "oid", "path"}`` (``RepoFile.__init__``/``RepoFolder.__init__``, hf_api.py line 711 on).
  ``HfFileSystem.find`` lists in parallel and splits a sub-tree after two pages (hf_file_system.py
  ``_ParallelRepoTreeListing``), so both recursive and one-level listings of a sub-folder are served.
- ``GET``/``HEAD /{repo}/resolve/{rev}/{path}`` : downloads (``file_download.py`` ``hf_hub_url``, the template in
  ``constants.py`` line 70), with ``Range: bytes=a-[b]`` (206, or 416 past the end): ``HfFileSystemStreamFile``
  reconnects with ``Range: bytes=<loc>-`` after a dropped stream, ``HfFileSystemFile._fetch_range`` reads
  blocks that way (hf_file_system.py). Like the Hub, an LFS file answers ``302`` to a content-addressed "CDN"
  URL (``/cdn/{sha256}``; the client follows redirects, ``utils/_http.py`` ``follow_redirects=True``), with
  ``X-Repo-Commit``, ``X-Linked-Etag`` and ``X-Linked-Size`` on the redirect and ``ETag`` = blob id otherwise.
- Errors the way ``utils/_http.py`` ``hf_raise_for_status`` reads them (line 826 on): ``X-Error-Code``
  ``RepoNotFound`` (401 without a token on a private repo, as the Hub answers for private and gated repos),
  ``RevisionNotFound``, ``EntryNotFound`` (404), and ``X-Error-Message: Invalid credentials in Authorization
  header`` (401) for a wrong token.

Xet is not modelled: no ``xetHash`` is listed, so the client downloads over plain HTTP (``HF_HUB_DISABLE_XET=1``
says the same). Anything else gets a 404, which the one other call the client makes, the best-effort
``/api/agent-harnesses`` registry (``utils/_detect_agent.py``), tolerates. Every request's method, path,
``Authorization`` and ``Range`` header is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def blob_id(data: bytes) -> str:
    """Git's object id of a blob: what the Hub lists as a file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file git stores for an LFS file (its blob id is the listed ``oid``)."""
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


@dataclass(frozen=True)
class Request:
    """One request the hub answered."""

    method: str
    path: str
    authorization: str | None
    range: str | None


@dataclass
class Repo:
    """One model repo: commits (sha -> {path: bytes}), branches/tags (name -> sha), which paths are in LFS."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)
    private: bool = False
    # path -> bytes served instead of the listed ones (same size: only a hash can tell)
    corrupt: dict[str, bytes] = field(default_factory=dict)
    # paths whose first download stops halfway (the connection closes): the client must resume with a Range
    drop_once: set[str] = field(default_factory=set)

    def commit(self, files: dict[str, bytes], ref: str = "main") -> str:
        """Add a commit holding ``files`` and point ``ref`` at it; its sha."""
        sha = hashlib.sha1(json.dumps(sorted((k, blob_id(v)) for k, v in files.items())).encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.refs[ref] = sha
        return sha

    def resolve(self, rev: str) -> str | None:
        return rev if rev in self.commits else self.refs.get(rev)


class FakeHub:
    """The Hub's API on 127.0.0.1; ``url`` goes in ``HF_ENDPOINT``. A context manager (starts and stops it)."""

    def __init__(self, token: str | None = None, page_size: int = 2) -> None:
        self.repos: dict[str, Repo] = {}
        self.token = token  # what a private repo accepts as "Authorization: Bearer <token>"
        self.page_size = page_size
        self.requests: list[Request] = []
        self.cdn: dict[str, tuple[Repo, str, bytes]] = {}  # sha256 -> the LFS file a redirect pointed at
        self.dropped: set[tuple[int, str]] = set()  # (id(repo), path) whose first download was cut
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def repo(self, repo_id: str, **kw: Any) -> Repo:
        self.repos[repo_id] = Repo(**kw)
        return self.repos[repo_id]

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def tree(self, repo: Repo, sha: str, path: str, recursive: bool) -> list[dict[str, Any]] | None:
        """The entries under ``path`` (None: no such folder), folders included, like the Hub's tree endpoint."""
        files = repo.commits[sha]
        prefix = f"{path}/" if path else ""
        if path and not any(name.startswith(prefix) for name in files):
            return None
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sorted(files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "oid": blob_id(folder.encode()), "path": folder})
            if recursive or len(parts) == 1:
                entries[name] = self.file_entry(repo, name, data)
        return list(entries.values())

    @staticmethod
    def file_entry(repo: Repo, name: str, data: bytes) -> dict[str, Any]:
        if name in repo.lfs:
            lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(lfs_pointer(data))}
            return {"type": "file", "oid": blob_id(lfs_pointer(data)), "size": len(data), "path": name, "lfs": lfs}
        return {"type": "file", "oid": blob_id(data), "size": len(data), "path": name}


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_INFO = re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self.handle_request(head=True)

        def do_GET(self) -> None:
            self.handle_request(head=False)

        def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, status: int, code: str | None, message: str) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self.send(status, json.dumps({"error": message}).encode(), headers)

        def allowed(self, repo: Repo) -> bool:
            """A private repo wants the hub's token; a wrong one is refused whatever the repo."""
            auth = self.headers.get("Authorization")
            if auth is not None and auth != f"Bearer {hub.token}":
                self.error(401, None, INVALID_CREDENTIALS)
                return False
            if repo.private and auth is None:
                self.error(401, "RepoNotFound", "Repository not found")
                return False
            return True

        def handle_request(self, head: bool) -> None:
            url = urlsplit(self.path)
            hub.record(Request(self.command, url.path, self.headers.get("Authorization"), self.headers.get("Range")))
            if m := _CDN.match(url.path):  # signed CDN URLs carry no Authorization on the real Hub
                if m["sha"] not in hub.cdn:
                    return self.error(404, None, "no such object")
                repo, path, data = hub.cdn[m["sha"]]
                return self.content(repo, path, data, {"ETag": f'"{m["sha"]}"'})
            match = _INFO.match(url.path) or _TREE.match(url.path) or _RESOLVE.match(url.path)
            if match is None:
                return self.error(404, None, "Sorry, we can't find the page you are looking for.")
            repo = hub.repos.get(match["repo"])
            if repo is None:
                return self.error(401 if self.headers.get("Authorization") is None else 404, "RepoNotFound", "nope")
            if not self.allowed(repo):
                return None
            rev = unquote(match["rev"] or "main")
            sha = repo.resolve(rev)
            if sha is None:
                return self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            if match.re is _INFO:
                siblings = [{"rfilename": name} for name in sorted(repo.commits[sha])]
                body = {"id": match["repo"], "sha": sha, "private": repo.private, "siblings": siblings}
                return self.send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
            if match.re is _TREE:
                return self.tree_page(repo, sha, unquote(match["path"] or ""), parse_qs(url.query), url.path)
            return self.resolve(repo, sha, unquote(match["path"]))

        def tree_page(self, repo: Repo, sha: str, path: str, query: dict[str, list[str]], route: str) -> None:
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries = hub.tree(repo, sha, path, recursive)
            if entries is None:
                return self.error(404, "EntryNotFound", f"{path} does not exist on {sha}")
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start : start + hub.page_size]
            headers = {"Content-Type": "application/json"}
            if start + hub.page_size < len(entries):
                expand = query.get("expand", ["false"])[0]
                query_next = f"recursive={str(recursive).lower()}&expand={expand}&cursor={start + hub.page_size}"
                nxt = f"{hub.url}{route}?{query_next}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            return self.send(200, json.dumps(page).encode(), headers)

        def resolve(self, repo: Repo, sha: str, path: str) -> None:
            data = repo.commits[sha].get(path)
            if data is None:
                return self.error(404, "EntryNotFound", f"{path} does not exist on {sha}")
            if path in repo.lfs:
                digest = hashlib.sha256(data).hexdigest()
                hub.cdn[digest] = (repo, path, data)
                headers = {
                    "Location": f"/cdn/{digest}",
                    "X-Repo-Commit": sha,
                    "X-Linked-Etag": f'"{digest}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{blob_id(lfs_pointer(data))}"',
                }
                return self.send(302, b"", headers)
            return self.content(repo, path, data, {"ETag": f'"{blob_id(data)}"', "X-Repo-Commit": sha})

        def content(self, repo: Repo, path: str, data: bytes, headers: dict[str, str]) -> None:
            """A file's bytes (``corrupt`` ones if set), or the range asked for; a ``drop_once`` file's first full
            GET stops halfway and closes the connection."""
            data = repo.corrupt.get(path, data)
            headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            status, body = 200, data
            if m := _RANGE.fullmatch(self.headers.get("Range", "")):
                start = int(m[1])
                end = int(m[2]) if m[2] else len(data) - 1
                if start >= len(data):
                    return self.send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                status, body = 206, data[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
            with hub._lock:
                drop = self.command == "GET" and status == 200 and path in repo.drop_once
                drop = drop and (id(repo), path) not in hub.dropped
                if drop:
                    hub.dropped.add((id(repo), path))
            if drop:
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return None
            return self.send(status, body, headers)

    return Handler
