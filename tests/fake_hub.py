"""A fake Hugging Face Hub on loopback: the endpoints huggingface_hub 2 calls, serving repos from memory.

    GET  /api/models/OWNER/NAME[/revision/REV] model_info (with per-file sizes: ?blobs=true)
    GET  /api/models/OWNER/NAME/tree/REV       list_repo_tree (snapshot_download lists the commit's files)
    HEAD /OWNER/NAME/resolve/REV/PATH          file metadata: X-Repo-Commit, ETag, Content-Length
    GET  /OWNER/NAME/resolve/REV/PATH          the file; a Range request gets 206 (resume)

Errors carry the X-Error-Code header huggingface_hub reads: RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo (401). No Xet headers are ever sent, so downloads use plain HTTP. `cut_after[path] = n` makes
the next `cut_times[path]` GETs of that file stop after n bytes and drop the connection.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    @classmethod
    def from_dir(cls, path: Path, **kwargs) -> FakeRepo:
        return cls({p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}, **kwargs)


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    cut_after: dict[str, int] = field(default_factory=dict)
    cut_times: dict[str, int] = field(default_factory=dict)
    url: str = ""

    def downloads(self, name: str) -> list[str | None]:
        """The Range header of every GET of the file `name` (None: the whole file)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + name)]


_INFO = re.compile(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/?]+))?")
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            hub.requests.append((self.command, path, self.headers.get("Range")))
            if m := _INFO.fullmatch(path):
                repo = self._repo(m[1], m[3] or "main")
                if repo is not None:
                    self._info(m[1], repo, m[2] or "revision", body)
            elif m := _RESOLVE.fullmatch(path):
                repo = self._repo(m[1], m[2])
                if repo is None:
                    return
                if repo.gated:
                    self._error(401, "GatedRepo", f"Access to model {m[1]} is restricted.", body)
                elif m[3] not in repo.files:
                    self._error(404, "EntryNotFound", f"{m[3]} does not exist", body, commit=repo.commit)
                else:
                    self._file(m[3], repo, body)
            else:
                self._error(404, "RepoNotFound", "not found", body)

        def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found", self.command == "GET")
            elif revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", self.command == "GET")
            else:
                return repo
            return None

        def _info(self, repo_id: str, repo: FakeRepo, what: str, body: bool) -> None:
            if what == "revision":
                data = {"id": repo_id, "sha": repo.commit, "private": False, "gated": "auto" if repo.gated else False,
                        "siblings": [{"rfilename": n, "size": len(b)} for n, b in sorted(repo.files.items())]}
            else:
                data = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for n, b in sorted(repo.files.items())]
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, body)

        def _file(self, name: str, repo: FakeRepo, body: bool) -> None:
            data = repo.files[name]
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Accept-Ranges": "bytes"}
            status, start = 200, 0
            if rng := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or ""):
                status, start = 206, int(rng[1])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            part = data[start:]
            if not body:
                self._send(status, part, headers, body=False)
                return
            if hub.cut_times.get(name, 0) > 0:
                hub.cut_times[name] -= 1
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(part))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(part[:hub.cut_after[name]])
                self.wfile.flush()
                self.close_connection = True  # the rest never comes: the client sees a short body
                return
            self._send(status, part, headers, body)

        def _error(self, status: int, code: str, message: str, body: bool, commit: str | None = None) -> None:
            headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, json.dumps({"error": message}).encode(), headers, body)

        def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


def serve(hub: FakeHub) -> ThreadingHTTPServer:
    """Start `hub` on 127.0.0.1 at an ephemeral port (hub.url is set); the caller shuts it down."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
