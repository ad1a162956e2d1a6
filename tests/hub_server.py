"""A stand-in for the Hugging Face Hub on 127.0.0.1 (HF_ENDPOINT points at it), serving what
huggingface_hub and llama-wizard ask of the real one for a download:

- GET /api/models/{repo}[/revision/{rev}] (HfApi.model_info with files_metadata): the listing;
- HEAD and GET /{repo}/resolve/{rev}/{path}: a 302 to the file's CDN address (on `localhost`,
  another host name for this same server, as the real CDN is another host) with the headers the
  real Hub sends beside it (X-Repo-Commit, X-Linked-Etag: the sha256, X-Linked-Size, ETag);
- GET /cdn/{repo}/{path}: the bytes, with Range (206, Content-Range) as the CDN does.

A gated repository answers 401 with X-Error-Code: GatedRepo. `drop_after[path] = N` makes the
next GET of that file send its full Content-Length but close the connection after N bytes (a
dropped link); `throttle` slows every body down (seconds per 64 KiB), so that a test can stop a
download half way. Every request is logged with its method, path, Range and headers."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import serving

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    headers: dict[str, str]
    status: int = 0


@dataclass
class Repo:
    sha: str
    files: dict[str, bytes]
    gated: bool = False


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    drop_after: dict[str, int] = field(default_factory=dict)
    throttle: float = 0.0
    corrupt: set[str] = field(default_factory=set)  # serve these files with one byte changed


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, *args: Any) -> None:
        pass

    def _log(self, status: int) -> None:
        self.server.state.log.append(
            Request(
                self.command,
                self.path,
                self.headers.get("Range"),
                {k.lower(): v for k, v in self.headers.items()},
                status,
            )
        )

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self._log(status)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        for name, repo in state.repos.items():
            if path in (f"/api/models/{name}", f"/api/models/{name}/revision/main",
                        f"/api/models/{name}/revision/{repo.sha}"):  # fmt: skip
                if repo.gated:
                    return self._gated()
                siblings = [
                    {"rfilename": p, "size": len(b),
                     "lfs": {"sha256": _sha(b), "size": len(b), "pointerSize": 134}}
                    for p, b in repo.files.items()
                ]  # fmt: skip
                body = json.dumps({"id": name, "sha": repo.sha, "siblings": siblings}).encode()
                return self._answer(200, {"Content-Type": "application/json"}, body)
            for revision in ("main", repo.sha):
                prefix = f"/{name}/resolve/{revision}/"
                if path.startswith(prefix):
                    return self._resolve(name, repo, path[len(prefix) :])
            if path.startswith(f"/cdn/{name}/"):
                return self._cdn(repo, path[len(f"/cdn/{name}/") :])
        body = json.dumps({"error": "Repository Not Found"}).encode()
        return self._answer(404, {"Content-Type": "application/json",
                                  "X-Error-Code": "RepoNotFound"}, body)  # fmt: skip

    def _gated(self) -> None:
        body = json.dumps({"error": "Access to this model is restricted."}).encode()
        self._answer(401, {"Content-Type": "application/json", "X-Error-Code": "GatedRepo",
                           "X-Error-Message": "Access restricted"}, body)  # fmt: skip

    def _resolve(self, name: str, repo: Repo, file: str) -> None:
        if repo.gated:
            return self._gated()
        data = repo.files.get(file)
        if data is None:
            return self._answer(404, {"X-Error-Code": "EntryNotFound",
                                      "X-Repo-Commit": repo.sha}, b"not found")  # fmt: skip
        # The CDN is another host, as the real Hub's is (huggingface_hub follows a redirect to
        # the same host, and would lose these headers): localhost, on this same server.
        port = self.server.server_address[1]
        return self._answer(
            302,
            {
                "Location": f"http://localhost:{port}/cdn/{name}/{file}",
                "X-Repo-Commit": repo.sha,
                "X-Linked-Etag": f'"{_sha(data)}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
            },
        )

    def _cdn(self, repo: Repo, file: str) -> None:
        state = self.server.state
        data = repo.files.get(file)
        if data is None:
            return self._answer(404, {}, b"not found")
        if file in state.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, status = 0, 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = int(match[2]) + 1 if match[2] else len(data)
            if start >= len(data):
                return self._answer(416, {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            data, status = data[start:end], 206
        if self.command == "HEAD":
            return self._answer(status, headers)
        drop = state.drop_after.pop(file, None)
        self._log(status)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        body = data if drop is None else data[:drop]
        try:
            for offset in range(0, len(body), 1 << 16):
                self.wfile.write(body[offset : offset + (1 << 16)])
                if state.throttle:
                    time.sleep(state.throttle)
        except (BrokenPipeError, ConnectionResetError):
            return None
        if drop is not None:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
        return None


class HubServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = HubState()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, repo: str, files: dict[str, bytes], *, gated: bool = False) -> str:
        """Serve `repo` with these files; returns its commit sha."""
        sha = hashlib.sha1(repo.encode()).hexdigest()
        self.state.repos[repo] = Repo(sha, dict(files), gated)
        return sha

    @property
    def log(self) -> list[Request]:
        return self.state.log

    def gets(self, prefix: str = "/cdn/") -> list[Request]:
        return [r for r in self.state.log if r.method == "GET" and r.path.startswith(prefix)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def hub_server() -> Iterator[HubServer]:
    server = HubServer()
    with serving(server):
        yield server


@pytest.fixture(name="hub")
def fixture_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """The stand-in Hub as HF_ENDPOINT, with the test's own HF_HUB_CACHE. Test modules import
    it: `from tests.hub_server import fixture_hub  # noqa: F401`."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with hub_server() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
