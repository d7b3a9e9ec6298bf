"""A minimal Hugging Face hub imitation on loopback, for testing real `huggingface_hub` downloads.

Serves the routes huggingface_hub 2.x uses for `HfApi.model_info`, `HfApi.list_repo_tree`,
`hf_hub_download` and `snapshot_download` (plain HTTP, no Xet):

- ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=True`` adds sizes and LFS sha256s)
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=True``)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small ("git") files are answered directly with
  ``ETag`` = git blob sha1; LFS files (weights) get a 302 to a second "CDN" server on another
  port, with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``, like the real hub.
- ``GET /_cdn/{sha256}/{path}`` on the CDN server (honours ``Range: bytes=N-``).

Repos are given as ``{repo_id: {"refs": {"main": sha}, sha: {path: bytes}, ...}}``, plus an
optional ``"gated_token": "hf_..."`` entry: file downloads of that repo then need
``Authorization: Bearer <token>`` (metadata stays public, as on the real hub).

`failing_files` / `corrupt_files` inject a 500 or a flipped first byte on content GETs.
Any request to a route the fake does not know is answered 418 and recorded in `unexpected`;
tests assert it stays empty. Every request is logged in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".h5", ".msgpack", ".onnx")
LFS_POINTER_SIZE = 134

RepoSpec = Mapping[str, Any]


def make_sha(seed: str) -> str:
    """A deterministic fake 40-hex commit sha."""
    return hashlib.sha1(seed.encode()).hexdigest()


def git_blob_sha(data: bytes) -> str:
    """Git's blob id of `data` (what the hub uses as ETag for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    """Whether the fake stores `path` in LFS (weights and anything over 1 MiB)."""
    return path.endswith(LFS_SUFFIXES) or len(data) > 1 << 20


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() == "true"


@dataclass(frozen=True)
class Request:
    """One request the fake hub saw."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    authorization: str | None


class FakeHub:
    """Hub + CDN servers on 127.0.0.1, ephemeral ports; use as a context manager."""

    def __init__(self, repos: Mapping[str, RepoSpec] | None = None) -> None:
        self.repos: dict[str, RepoSpec] = dict(repos or {})
        self.requests: list[Request] = []
        self.unexpected: list[str] = []
        self.failing_files: set[str] = set()  # repo paths whose content GET answers 500
        self.corrupt_files: set[str] = set()  # repo paths served with their first byte flipped
        self._lock = threading.Lock()
        self._hub = self._make_server("hub")
        self._cdn = self._make_server("cdn")
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def _make_server(self, role: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            fake = hub
            server_role = role

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    @property
    def url(self) -> str:
        """The hub endpoint, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        """Where LFS files are redirected to (a different origin, like the real CDN)."""
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def start(self) -> FakeHub:
        for server in (self._hub, self._cdn):
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries for tests -------------------------------------------------------------------

    def file_gets(self, path: str) -> int:
        """How many content GETs (resolve or CDN) were served for repo file `path`."""
        suffix = "/" + quote(path)
        return sum(
            1
            for r in self.requests
            if r.method == "GET" and ("/resolve/" in r.path or r.server == "cdn")
            if r.path.split("?")[0].endswith(suffix)
        )

    # -- repo model --------------------------------------------------------------------------

    def _resolve(self, repo_id: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        spec = self.repos[repo_id]
        refs: Mapping[str, str] = spec.get("refs", {})
        sha = refs.get(rev, rev)
        files = spec.get(sha) if SHA_RE.match(sha) else None
        return (sha, files) if files is not None else None

    def _record(self, request: Request, known: bool) -> None:
        with self._lock:
            self.requests.append(request)
            if not known:
                self.unexpected.append(f"{request.server} {request.method} {request.path}")

    def iter_blobs(self) -> Iterator[tuple[str, bytes]]:
        """All (repo path, content) pairs across repos and commits."""
        for spec in self.repos.values():
            for key, files in spec.items():
                if SHA_RE.match(key):
                    yield from files.items()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    server_role: str

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    # -- plumbing ----------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, code: str, message: str) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        self._json(status, {"error": message}, headers)

    def _unknown(self) -> None:
        with self.fake._lock:
            self.fake.unexpected.append(f"{self.server_role} {self.command} {self.path}")
        self._send(418, b"fake hub: unexpected request", content_type="text/plain")

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.split("/")[1:]
        if self.server_role == "cdn":
            handler = self._cdn if self.command in ("GET", "HEAD") else None
        else:
            handler = self._route(segments)
        auth = self.headers.get("Authorization")
        self.fake._record(
            Request(self.server_role, self.command, self.path, auth), handler is not None
        )
        if handler is None:
            self._send(418, b"fake hub: unexpected request", content_type="text/plain")
            return
        handler(segments, query)

    def _route(self, segs: list[str]) -> Any:
        if self.command == "GET" and len(segs) >= 3 and segs[:2] == ["api", "models"]:
            return self._api
        if self.command in ("GET", "HEAD") and "resolve" in segs[1:3]:
            return self._file
        return None

    @staticmethod
    def _split_repo(rest: list[str], keyword_index: int) -> tuple[str, list[str]]:
        """Split ``[ns, name, kw, ...]`` or ``[name, kw, ...]`` into repo id and the remainder."""
        if keyword_index == 1:
            return unquote(rest[0]), rest[1:]
        return f"{unquote(rest[0])}/{unquote(rest[1])}", rest[2:]

    # -- /api/models/... ----------------------------------------------------------------------

    def _api(self, segs: list[str], query: dict[str, str]) -> None:
        rest = segs[2:]
        kw_at = next((i for i in (1, 2) if len(rest) > i and rest[i] in ("revision", "tree")), None)
        if kw_at is None:
            if len(rest) > 2:
                self._unknown()
                return
            repo_id, tail = "/".join(unquote(s) for s in rest), ["revision", "main"]
        else:
            repo_id, tail = self._split_repo(rest, kw_at)
        if repo_id not in self.fake.repos:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        if len(tail) < 2:
            self._error(404, "NotFound", "fake hub: missing revision")
            return
        rev = unquote(tail[1])
        resolved = self.fake._resolve(repo_id, rev)
        if resolved is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        sha, files = resolved
        if tail[0] == "revision" and len(tail) == 2:
            self._json(200, self._model_info(repo_id, sha, files, _flag(query, "blobs")))
        elif tail[0] == "tree":
            prefix = "/".join(unquote(s) for s in tail[2:])
            self._json(200, self._tree(files, prefix, _flag(query, "recursive")))
        else:
            self._unknown()

    def _model_info(
        self, repo_id: str, sha: str, files: Mapping[str, bytes], blobs: bool
    ) -> dict[str, Any]:
        siblings = []
        for path, data in sorted(files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling["size"] = len(data)
                sibling["blobId"] = git_blob_sha(data)
                if is_lfs(path, data):
                    sibling["lfs"] = {
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": LFS_POINTER_SIZE,
                    }
            siblings.append(sibling)
        gated = "manual" if self.fake.repos[repo_id].get("gated_token") else False
        return {
            "_id": sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": False,
            "gated": gated,
            "disabled": False,
            "tags": [],
            "lastModified": "2024-01-01T00:00:00.000Z",
            "siblings": siblings,
        }

    @staticmethod
    def _tree(files: Mapping[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = f"{prefix}/" if prefix else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts)):
                folder = base + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder,
                        {"type": "directory", "oid": make_sha(folder), "size": 0, "path": folder},
                    )
                if not recursive:
                    break
            if not recursive and len(parts) > 1:
                continue
            entry: dict[str, Any] = {
                "type": "file",
                "oid": git_blob_sha(data),
                "size": len(data),
                "path": path,
            }
            if is_lfs(path, data):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": LFS_POINTER_SIZE,
                }
            entries[path] = entry
        return list(entries.values())

    # -- /{repo}/resolve/{rev}/{path} ---------------------------------------------------------

    def _file(self, segs: list[str], query: dict[str, str]) -> None:
        kw_at = 1 if segs[1] == "resolve" else 2
        repo_id, tail = self._split_repo(segs, kw_at)
        if repo_id not in self.fake.repos:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        if len(tail) < 3:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        rev, path = unquote(tail[1]), unquote("/".join(tail[2:]))
        resolved = self.fake._resolve(repo_id, rev)
        if resolved is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        sha, files = resolved
        token = self.fake.repos[repo_id].get("gated_token")
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self._error(
                401, "GatedRepo", "Access to model is restricted, you must be authenticated."
            )
            return
        if path not in files:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        data = files[path]
        if is_lfs(path, data):
            digest = hashlib.sha256(data).hexdigest()
            location = f"{self.fake.cdn_url}/_cdn/{digest}/{quote(path)}"
            headers = {
                "Location": location,
                "X-Repo-Commit": sha,
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_sha(data)}"',
            }
            self._send(302, b"", headers, content_type="text/plain")
            return
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"'}
        self._content(path, data, headers)

    def _content(self, path: str, data: bytes, headers: dict[str, str]) -> None:
        if self.command == "GET" and path in self.fake.failing_files:
            self._send(500, b"fake hub: injected failure", content_type="text/plain")
            return
        if path in self.fake.corrupt_files:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and int(match.group(1)) < len(data):
            start = int(match.group(1))
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            self._send(206, data[start:], headers, content_type="application/octet-stream")
            return
        self._send(200, data, headers, content_type="application/octet-stream")

    # -- CDN ----------------------------------------------------------------------------------

    def _cdn(self, segs: list[str], query: dict[str, str]) -> None:
        if len(segs) < 3 or segs[0] != "_cdn":
            self._unknown()
            return
        digest, path = segs[1], unquote("/".join(segs[2:]))
        for blob_path, data in self.fake.iter_blobs():
            if blob_path == path and hashlib.sha256(data).hexdigest() == digest:
                self._content(path, data, {"ETag": f'"{digest}"'})
                return
        self._send(404, b"no such blob", content_type="text/plain")
