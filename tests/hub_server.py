"""A threaded local stand-in of the Hugging Face Hub API on 127.0.0.1, in memory, for the Hub tests:
just what `create_repo`, `upload_folder` (validate-yaml for README.md, preupload + commit, every file
as a regular base64 payload, no LFS) and `snapshot_download` (repo_info, the tree listing, HEAD/GET on resolve) call.

    server = HubServer(); server.start(); os.environ["HF_ENDPOINT"] = server.url
    server.log   # (method, path) of every request, to see what was (not) asked
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class _Handler(BaseHTTPRequestHandler):
    server: "HubServer"

    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, code: str = "RepoNotFound") -> None:
        self._json({"error": code}, 404, {"X-Error-Code": code, "X-Error-Message": code})

    def _repo(self, org: str, name: str):
        return self.server.repos.get(f"{org}/{name}")

    def do_POST(self):
        path = unquote(urlparse(self.path).path)
        self.server.log.append(("POST", path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = path.strip("/").split("/")
        if parts == ["api", "repos", "create"]:
            req = json.loads(body)
            repo_id = f"{req.get('organization') or 'user'}/{req['name']}" if "/" not in req["name"] else req["name"]
            with self.server.lock:
                self.server.repos.setdefault(repo_id, {"files": {}, "sha": "0" * 40, "private": req.get("private")})
            return self._json({"url": f"{self.server.url}/{repo_id}", "name": repo_id})
        if parts == ["api", "validate-yaml"]:  # the model card's front matter: accepted as it is
            return self._json({"errors": [], "warnings": []})
        # api/models/<org>/<name>/(preupload|commit)/<rev>
        if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] in ("preupload", "commit"):
            repo = self._repo(parts[2], parts[3])
            if repo is None:
                return self._not_found()
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                return self._json(
                    {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            with self.server.lock:
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        v = item["value"]
                        repo["files"][v["path"]] = base64.b64decode(v["content"])
                    elif item["key"] != "header":
                        return self._json({"error": f"unsupported {item['key']}"}, 400)
                h = hashlib.sha1(repr(sorted(repo["files"].items())).encode()).hexdigest()
                repo["sha"] = h
            url = f"{self.server.url}/{parts[2]}/{parts[3]}/commit/{h}"
            return self._json({"commitUrl": url, "commitOid": h})
        self._json({"error": "not implemented"}, 404)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = unquote(urlparse(self.path).path)
        self.server.log.append((self.command, path))
        parts = path.strip("/").split("/")
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in ("revision", "tree"):
            repo = self._repo(parts[2], parts[3])
            if repo is None:
                return self._not_found()
            if parts[4] == "revision":
                sib = [{"rfilename": p} for p in sorted(repo["files"])]
                return self._json({"id": f"{parts[2]}/{parts[3]}", "sha": repo["sha"], "siblings": sib})
            tree = [
                {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for p, b in sorted(repo["files"].items())
            ]
            return self._json(tree)
        # <org>/<name>/resolve/<rev>/<file>
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(parts[0], parts[1])
            if repo is None:
                return self._not_found()
            data = repo["files"].get("/".join(parts[4:]))
            if data is None:
                return self._not_found("EntryNotFound")
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", repo["sha"])
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data)
            return
        self._json({"error": "not implemented"}, 404)


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos: dict[str, dict] = {}
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> HubServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
