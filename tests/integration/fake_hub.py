"""A Hugging Face Hub look-alike on 127.0.0.1 for the real `huggingface_hub` client.

It answers what huggingface_hub 0.36-2.x asks for a model download: `GET
/api/models/{id}[/revision/{rev}]` (with `?blobs=true` sizes), `GET /api/models/{id}/tree/
{rev}`, `HEAD`/`GET /{id}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`/`X-Linked-Etag`
and `Range: bytes=N-`; errors carry `X-Error-Code` (GatedRepo, RepoNotFound,
RevisionNotFound, EntryNotFound). Every request is recorded; a repo may be gated (one good
token) or throttled (bytes per second) to test interrupted downloads.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass
class HubRepo:
    files: dict[str, bytes]
    commit: str
    gated_token: str | None = None
    throttle_bps: int | None = None

    def is_lfs(self, path: str) -> bool:
        return path.endswith((".safetensors", ".bin")) or len(self.files[path]) > 1_000_000

    def etag(self, path: str) -> str:
        data = self.files[path]
        if self.is_lfs(path):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def sibling(self, path: str) -> dict[str, Any]:
        data = self.files[path]
        out: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": self.etag(path)}
        if self.is_lfs(path):
            out["lfs"] = {"size": len(data), "sha256": self.etag(path), "pointerSize": 134}
        return out


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    authorized: bool
    sent: int = 0  # body bytes written (partial when the client went away)


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes], **kw: Any) -> HubRepo:
        commit = hashlib.sha1(repo_id.encode() + str(sorted(files)).encode()).hexdigest()
        self.repos[repo_id] = repo = HubRepo(files=files, commit=commit, **kw)
        return repo

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()

    def gets(self, repo_id: str) -> dict[str, int]:
        """File path -> number of GET requests on its resolve URL."""
        out: dict[str, int] = {}
        prefix = f"/{repo_id}/resolve/"
        for s in list(self.seen):
            if s.method == "GET" and s.path.startswith(prefix):
                name = s.path[len(prefix):].split("/", 1)[1]
                out[name] = out.get(name, 0) + 1
        return out

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- request handling -----------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        auth = h.headers.get("authorization", "")
        seen = Seen(h.command, path, h.headers.get("range"), bool(auth))
        with self._lock:
            self.seen.append(seen)
        try:
            if path.startswith("/api/models/"):
                self._api(h, path[len("/api/models/"):], auth, url.query)
            elif "/resolve/" in path:
                self._resolve(h, path, auth, head, seen)
            else:
                self._error(h, 404, "EntryNotFound", "no such route")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _repo(self, h: BaseHTTPRequestHandler, repo_id: str, auth: str) -> HubRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound", f"Repository Not Found for url: {repo_id}")
            return None
        if repo.gated_token is not None:
            if not auth:
                self._error(h, 401, "GatedRepo", f"Access to model {repo_id} is restricted.")
                return None
            if auth != f"Bearer {repo.gated_token}":
                self._error(h, 403, "GatedRepo", f"Access to model {repo_id} is restricted "
                            "and you are not in the authorized list.")
                return None
        return repo

    def _api(self, h: BaseHTTPRequestHandler, rest: str, auth: str, query: str) -> None:
        parts = rest.split("/")
        repo_id, tail = "/".join(parts[:2]), parts[2:]
        repo = self._repo(h, repo_id, auth)
        if repo is None:
            return
        rev = tail[1] if len(tail) >= 2 else "main"
        if rev not in ("main", repo.commit):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if tail[:1] == ["tree"]:
            body: Any = [{"type": "file", "oid": repo.etag(p), "size": len(d), "path": p,
                          **({"lfs": {"oid": repo.etag(p), "size": len(d), "pointerSize": 134}}
                             if repo.is_lfs(p) else {})}
                         for p, d in sorted(repo.files.items())]
        else:
            blobs = "blobs=true" in query.lower() or "blobs=1" in query
            body = {"_id": repo.commit[:24], "id": repo_id, "modelId": repo_id,
                    "sha": repo.commit, "private": False,
                    "gated": "manual" if repo.gated_token else False, "disabled": False,
                    "downloads": 0, "likes": 0, "tags": [], "library_name": "transformers",
                    "lastModified": "2026-01-01T00:00:00.000Z",
                    "siblings": [repo.sibling(p) if blobs else {"rfilename": p}
                                 for p in sorted(repo.files)]}
        data = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _resolve(self, h: BaseHTTPRequestHandler, path: str, auth: str, head: bool,
                 seen: Seen) -> None:
        repo_id, rest = path.lstrip("/").split("/resolve/", 1)
        rev, _, name = rest.partition("/")
        repo = self._repo(h, repo_id, auth)
        if repo is None:
            return
        if rev not in ("main", repo.commit):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if name not in repo.files:
            self._error(h, 404, "EntryNotFound", f"{name} does not exist")
            return
        data = repo.files[name]
        start = 0
        rng = h.headers.get("range")
        if rng and rng.startswith("bytes=") and not head:
            start = int(rng[6:].split("-")[0])
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", repo.commit)
        h.send_header("ETag", f'"{repo.etag(name)}"')
        if repo.is_lfs(name):
            h.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
            h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        chunk = 64 * 1024
        for i in range(start, len(data), chunk):
            piece = data[i:i + chunk]
            h.wfile.write(piece)
            seen.sent += len(piece)
            if repo.throttle_bps:
                time.sleep(len(piece) / repo.throttle_bps)

    @staticmethod
    def _error(h: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
