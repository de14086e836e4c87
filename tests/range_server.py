"""A threaded HTTP server on 127.0.0.1 for download tests: serves a directory with Range
requests (which `http.server.SimpleHTTPRequestHandler` does not support), injects faults, and
answers the two Hugging Face hub calls `hf_hub_download` and `HfApi.get_paths_info` make.

Faults are queued per path and used up one GET each:
    server.faults["/a.tar.gz"] = ["drop:5000", "503"]
  drop:N         announce the whole body, send N bytes, close the connection
  stall:N        announce the whole body, send N bytes, then nothing until the server stops
  hang           accept the request and send nothing, not even headers
  503 / 404 ...  answer with that status
  ignore-range   answer 200 with the whole file although a Range was asked for
  shift-range    answer 206 with a range starting one byte after the one asked for
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Handler(BaseHTTPRequestHandler):
    server: "RangeServer"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def do_POST(self):
        path = unquote(urlparse(self.path).path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        self.server.log.append(("POST", path, None))
        parts = path.strip("/").split("/")  # api/datasets/<owner>/<name>/paths-info/<rev>
        if len(parts) == 6 and parts[0] == "api" and parts[4] == "paths-info":
            form = parse_qs(body)
            base = self.server.root / parts[1] / parts[2] / parts[3] / "resolve" / parts[5]
            infos = []
            for p in form.get("paths", []):
                f = base / p
                if f.is_file():
                    sha = self.server.lfs_sha256.get(p) or hashlib.sha256(f.read_bytes()).hexdigest()
                    infos.append(
                        {
                            "type": "file",
                            "path": p,
                            "size": f.stat().st_size,
                            "oid": hashlib.sha1(f.read_bytes()).hexdigest(),
                            "lfs": {"oid": sha, "size": f.stat().st_size, "pointerSize": 130},
                        }
                    )

            data = json.dumps(infos).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_error(404)

    def _serve(self, head: bool):
        srv = self.server
        path = unquote(urlparse(self.path).path)
        rng = self.headers.get("Range")
        srv.log.append(("HEAD" if head else "GET", path, rng))
        with srv.lock:
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
            queue = srv.faults.get(path)
            fault = queue.pop(0) if queue and not head else None  # faults are for GETs
        try:
            self._respond(path, rng, head, fault)
        finally:
            with srv.lock:
                srv.active -= 1

    def _respond(self, path: str, rng: str | None, head: bool, fault: str | None):
        srv = self.server
        if fault == "hang":
            srv.stopping.wait(120)
            return
        if fault and fault.isdigit():
            self.send_error(int(fault))
            return
        f = (srv.root / path.lstrip("/")).resolve()
        if not f.is_file() or not f.is_relative_to(srv.root.resolve()):
            self.send_response(404)
            self.send_header("X-Repo-Commit", FAKE_COMMIT)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = f.read_bytes()
        size = len(data)
        start, end = 0, size - 1
        status = 200
        if rng and fault != "ignore-range":
            a, _, b = rng.removeprefix("bytes=").partition("-")
            start = int(a) + (1 if fault == "shift-range" else 0)
            end = int(b) if b else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", FAKE_COMMIT)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        if fault and fault.startswith("drop:"):
            self.wfile.write(body[: int(fault[5:])])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault and fault.startswith("stall:"):
            self.wfile.write(body[: int(fault[6:])])
            self.wfile.flush()
            srv.stopping.wait(120)  # a server that stopped answering: the client must give up
            self.close_connection = True
            return
        step = 64 * 1024
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            if srv.delay:
                time.sleep(srv.delay)


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root)
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self.lfs_sha256: dict[str, str] = {}  # hub path -> sha256 paths-info reports instead
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # ends stalled answers
        self.active = self.max_active = 0
        self.delay = 0.0  # seconds between 64 KiB chunks (to overlap concurrent requests)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self, path: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.log if r[1] == path]

    def __enter__(self) -> "RangeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
