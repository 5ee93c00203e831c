"""A minimal Hugging Face hub on 127.0.0.1: serves repos from local folders (byte ranges too), or answers 401/404
like the hub.

It lets the tests drive huggingface_hub's real download code (HF_ENDPOINT pointed here) through gated,
withdrawn and working repositories, with no network.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}
        self.gated: set[str] = set()
        self.requests: list[str] = []
        self.heads: dict[str, str] = {}  # repo -> the commit `main` is now (COMMIT when not set)
        self.history: dict[tuple[str, str], Path] = {}  # (repo, older commit) -> its files
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _error(self, status: int, code: str, message: str):
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self, head: bool):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                if path.startswith("/api/models/"):
                    parts = path[len("/api/models/"):].split("/")
                    revision = parts[3] if len(parts) > 3 and parts[2] in ("tree", "revision") else "main"
                    return self._api("/".join(parts[:2]), tree=len(parts) > 2 and parts[2] == "tree",
                                     revision=revision)
                parts = path.lstrip("/").split("/")
                repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                folder, commit = hub.lookup(repo, parts[3] if len(parts) > 3 else "main")
                if repo in hub.gated:
                    return self._error(401, "GatedRepo", "Access to this repo is restricted.")
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", "Repository not found")
                file = folder / filename
                if not file.is_file():
                    return self._error(404, "EntryNotFound", "Entry not found")
                data = file.read_bytes()
                etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if wanted:  # as the hub: a byte range (safetensors headers are read this way)
                    start = int(wanted[1])
                    end = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
                    data = data[start:end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{file.stat().st_size}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _api(self, repo: str, tree: bool, revision: str = "main"):
                if repo in hub.gated:
                    return self._error(401, "GatedRepo", "Access to this repo is restricted.")
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", "Repository not found")
                folder, commit = hub.lookup(repo, revision)
                files = sorted(p for p in folder.rglob("*") if p.is_file())
                names = [p.relative_to(folder).as_posix() for p in files]
                if tree:
                    listing = [{"type": "file", "path": name, "size": p.stat().st_size,
                                "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                               for name, p in zip(names, files, strict=True)]
                    body = json.dumps(listing).encode()
                else:
                    body = json.dumps({"id": repo, "modelId": repo, "sha": commit, "private": False,
                                       "gated": False, "siblings": [{"rfilename": n} for n in names]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def lookup(self, repo: str, revision: str) -> tuple[Path | None, str]:
        """The files and commit a revision names: an older commit kept in `history`, else the repo as it is now."""
        if (repo, revision) in self.history:
            return self.history[(repo, revision)], revision
        return self.repos.get(repo), self.heads.get(repo, COMMIT)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
