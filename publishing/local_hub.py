"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1, standard library only (plus huggingface_hub's card parser).

No machine of this project reaches the Hub, so pushes are tested (and can be tried by users) against this server:
`python -m publishing.local_hub --port 8765 --storage DIR`, then `HF_ENDPOINT=http://127.0.0.1:8765
HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_local llama-paper push ...`. It implements what huggingface_hub 2.x and transformers
5.x call to create repos, upload (regular files and LFS "basic" transfers; Xet storage is not emulated, hence
HF_HUB_DISABLE_XET=1) and download (repo info, tree, resolve). The preupload answer carries each file's remote oid, so
clients skip unchanged files; LFS objects already stored get no upload action, so an interrupted push resumes.
README.md metadata is validated with huggingface_hub's own parser (`publishing.card.validate_card`), as the Hub
does at push time.

Storage under DIR: see `publishing.hub_storage`. `HubServer.stats` records what was received (bytes, commits).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .hub_storage import HubError, RepoStore, git_blob_sha1, lfs_pointer

DEFAULT_NAMESPACE = "user"
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores files of 10 MB and more in LFS
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".model", ".gguf", ".png", ".jpg", ".npy", ".h5",
                ".msgpack", ".onnx", ".zip", ".tar", ".gz")
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
CHUNK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    """Routes the Hub's REST calls to `RepoStore`; one instance per request."""

    protocol_version = "HTTP/1.1"
    server: "HubServer"

    # --- plumbing ----------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        if self.server.verbose:
            super().log_message(format, *args)

    @property
    def endpoint(self) -> str:
        return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

    def _body_chunks(self):
        """The request body in chunks (Content-Length or chunked transfer encoding)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(CHUNK, remaining))
                    if not data:
                        raise HubError(400, None, "truncated chunked body")
                    remaining -= len(data)
                    yield data
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                raise HubError(400, None, "truncated body")
            remaining -= len(data)
            yield data

    def _body(self) -> bytes:
        return b"".join(self._body_chunks())

    def _json_body(self) -> Any:
        raw = self._body()
        return json.loads(raw) if raw else {}

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _require_token(self) -> None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise HubError(401, None, "Invalid credentials in Authorization header (write access needs a token)")

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        try:
            for method, pattern, func in ROUTES:
                if method == self.command or (method == "GET" and self.command == "HEAD"):
                    match = pattern(parts)
                    if match is not None:
                        return func(self, *match)
            raise HubError(404, None, f"no route for {self.command} {url.path}")
        except HubError as err:
            self.close_connection = True  # the request body may be unread: do not reuse the connection
            headers = {"X-Error-Message": err.message, "Connection": "close"}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json({"error": err.message}, err.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # --- repositories ------------------------------------------------------------------------------------------
    def create_repo(self) -> None:
        self._require_token()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or DEFAULT_NAMESPACE}/{body['name']}"
        private = bool(body.get("private")) or body.get("visibility") == "private"
        created = self.server.store.create(repo_type, repo_id, private)
        prefix = "" if repo_type == "model" else f"/{repo_type}s"
        self._json({"url": f"{self.endpoint}{prefix}/{repo_id}", "name": repo_id}, 200 if created else 409)

    def whoami(self) -> None:
        self._require_token()
        self._json({"type": "user", "name": DEFAULT_NAMESPACE, "fullname": "Local Hub user", "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"role": "write", "displayName": "local"}}})

    def validate_yaml(self) -> None:
        from .card import validate_card  # huggingface_hub's parser: the Hub's own check, offline

        body = self._json_body()
        errors = validate_card(body.get("content", ""), body.get("repoType") or "model")
        self._json({"errors": [{"message": e} for e in errors], "warnings": []}, 400 if errors else 200)

    def repo_info(self, rtype: str, ns: str, name: str, revision: str = "main") -> None:
        repo_type, repo_id = REPO_TYPES[rtype], f"{ns}/{name}"
        repo = self.server.store.load(repo_type, repo_id)
        sha = self.server.store.resolve(repo, revision)
        files = repo["commits"][sha]["files"]
        self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo["private"], "disabled": False,
                    "gated": False, "downloads": 0, "likes": 0, "tags": [],
                    "lastModified": _iso(repo["commits"][sha]["date"]),
                    "siblings": [{"rfilename": p, "size": f["size"]} for p, f in sorted(files.items())]})

    def tree(self, rtype: str, ns: str, name: str, revision: str, *path: str) -> None:
        repo_type, repo_id = REPO_TYPES[rtype], f"{ns}/{name}"
        repo = self.server.store.load(repo_type, repo_id)
        files = repo["commits"][self.server.store.resolve(repo, revision)]["files"]
        prefix = "/".join(path).strip("/")
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        entries, dirs = [], set()
        for p, f in sorted(files.items()):
            if prefix and not p.startswith(prefix + "/"):
                continue
            rest = p[len(prefix) + 1:] if prefix else p
            parents = rest.split("/")[:-1]
            for i in range(len(parents) if recursive else min(1, len(parents))):
                dirs.add("/".join(([prefix] if prefix else []) + parents[:i + 1]))
            if recursive or not parents:
                entry = {"type": "file", "path": p, "size": f["size"], "oid": f["oid"]}
                if f.get("lfs"):
                    entry["lfs"] = {"oid": f["lfs"], "size": f["size"], "pointerSize": f["pointer_size"]}
                entries.append(entry)
        if prefix and not entries and not dirs:
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist on {revision}")
        entries += [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0}
                    for d in sorted(dirs)]
        self._json(entries)

    def create_branch(self, rtype: str, ns: str, name: str, branch: str) -> None:
        self._require_token()
        repo_type, repo_id = REPO_TYPES[rtype], f"{ns}/{name}"
        body = self._json_body()
        with self.server.store.lock:
            repo = self.server.store.load(repo_type, repo_id)
            if branch in repo["branches"]:
                raise HubError(409, None, f"Reference {branch} already exists")
            repo["branches"][branch] = self.server.store.resolve(repo, body.get("startingPoint") or "main")
            self.server.store.save(repo_type, repo_id, repo)
        self._json({})

    # --- uploads -----------------------------------------------------------------------------------------------
    def preupload(self, rtype: str, ns: str, name: str, revision: str) -> None:
        self._require_token()
        repo_type, repo_id = REPO_TYPES[rtype], f"{ns}/{name}"
        repo = self.server.store.load(repo_type, repo_id)
        files = {} if revision.startswith("refs/pr/") and revision not in repo["branches"] else \
            repo["commits"][self.server.store.resolve(repo, revision)]["files"]
        answer = []
        for f in self._json_body().get("files", []):
            lfs = f["size"] >= self.server.lfs_min_size or f["path"].lower().endswith(LFS_SUFFIXES)
            remote = files.get(f["path"])
            oid = None if remote is None else (remote["lfs"] or remote["oid"])
            answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": oid})
        self._json({"files": answer})

    def lfs_batch(self, *repo_parts: str) -> None:
        self._require_token()
        body = self._json_body()
        objects = []
        for obj in body.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not self.server.store.has_lfs(obj["oid"]):
                self.server.announced.add(obj["oid"])
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/api/local-hub/lfs/{obj['oid']}",
                                               "header": {}}}
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_put(self, oid: str) -> None:
        # Like the Hub's pre-signed storage URLs, the upload URL itself is the credential: only announced oids.
        if oid not in self.server.announced:
            raise HubError(403, None, f"LFS object {oid} was not announced by a batch request")
        store, digest, size = self.server.store, hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=store.root / "tmp")
        with os.fdopen(fd, "wb") as fh:
            for chunk in self._body_chunks():
                digest.update(chunk)
                fh.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != oid:
            os.unlink(tmp)
            raise HubError(400, None, f"LFS object {oid}: received content has sha256 {digest.hexdigest()}")
        os.replace(tmp, store.lfs_path(oid))
        self.server.record(lfs_bytes=size, lfs_objects=1)
        self._send(200)

    def commit(self, rtype: str, ns: str, name: str, revision: str) -> None:
        self._require_token()
        repo_type, repo_id = REPO_TYPES[rtype], f"{ns}/{name}"
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        with self.server.store.lock:
            repo = self.server.store.load(repo_type, repo_id)
            create_pr = self.query.get("create_pr") in ("1", "true")
            parent = self.server.store.resolve(repo, revision)
            files = dict(repo["commits"][parent]["files"])
            received = self._apply_operations(files, lines)
            sha = hashlib.sha1(json.dumps([parent, header, sorted(files.items()), time.time_ns()]).encode()).hexdigest()
            repo["commits"][sha] = {"parent": parent, "message": header.get("summary", ""), "files": files,
                                    "date": time.time()}
            branch, pr_url = revision, None
            if create_pr:
                repo["prs"] += 1
                branch = f"refs/pr/{repo['prs']}"
                pr_url = f"{self.endpoint}/{repo_id}/discussions/{repo['prs']}"
            repo["branches"][branch] = sha
            self.server.store.save(repo_type, repo_id, repo)
        self.server.record(commits=1, regular_bytes=received, commit_log=[{"repo": repo_id, "revision": branch,
                                                                             "sha": sha, "paths": [
            x["value"]["path"] for x in lines if x["key"] in ("file", "lfsFile")]}])
        self._json({"commitUrl": f"{self.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha,
                    "pullRequestUrl": pr_url})

    def _apply_operations(self, files: dict[str, dict], lines: list[dict]) -> int:
        """Apply a commit's NDJSON operations to a file table; returns the regular bytes received."""
        received = 0
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else \
                    value["content"].encode()
                received += len(data)
                files[value["path"]] = {"size": len(data), "oid": self.server.store.put_blob(data), "lfs": None}
            elif key == "lfsFile":
                if not self.server.store.has_lfs(value["oid"]):
                    raise HubError(400, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                pointer = lfs_pointer(value["oid"], value["size"])
                files[value["path"]] = {"size": value["size"], "oid": git_blob_sha1(pointer), "lfs": value["oid"],
                                        "pointer_size": len(pointer)}
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
        return received

    # --- downloads ---------------------------------------------------------------------------------------------
    def resolve_file(self, *parts: str) -> None:
        repo_type = "model"
        if parts[0] in ("datasets", "spaces"):
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        repo_id, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        repo = self.server.store.load(repo_type, repo_id)
        sha = self.server.store.resolve(repo, revision)
        entry = repo["commits"][sha]["files"].get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"', "Accept-Ranges": "none"}
        if entry.get("lfs"):
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]}"', "X-Linked-Size": str(entry["size"])})
            source = self.server.store.lfs_path(entry["lfs"])
        else:
            source = self.server.store.blob_path(entry["oid"])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(entry["size"]))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "GET":
            with open(source, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    self.wfile.write(chunk)

    def stats(self) -> None:
        self._json(self.server.snapshot())


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _route(*template: str):
    """A matcher for a path template: literal segments, `{x}` one segment, `{x*}` the rest (one or more)."""

    def match(parts: list[str]) -> tuple[str, ...] | None:
        out: list[str] = []
        for i, t in enumerate(template):
            if t.endswith("*}"):
                rest = parts[i:]
                return tuple(out + rest) if rest and all(rest) else None
            if i >= len(parts):
                return None
            if t.startswith("{"):
                if t == "{type}" and parts[i] not in REPO_TYPES:
                    return None
                out.append(parts[i])
            elif parts[i] != t:
                return None
        return tuple(out) if len(parts) == len(template) else None

    return match


def _with_revision(func):
    """Wrap a handler taking (type, ns, name, revision, *path): the revision may arrive as `refs/pr/N` unquoted."""

    def call(handler: Handler, rtype: str, ns: str, name: str, *rest: str) -> None:
        rest_list = list(rest)
        if rest_list[:2] == ["refs", "pr"] and len(rest_list) >= 3:
            rest_list = ["refs/pr/" + rest_list[2]] + rest_list[3:]
        return func(handler, rtype, ns, name, *rest_list)

    return call


ROUTES = [
    ("POST", _route("api", "repos", "create"), Handler.create_repo),
    ("GET", _route("api", "whoami-v2"), Handler.whoami),
    ("POST", _route("api", "validate-yaml"), Handler.validate_yaml),
    ("GET", _route("api", "local-hub", "stats"), Handler.stats),
    ("PUT", _route("api", "local-hub", "lfs", "{oid}"), Handler.lfs_put),
    ("GET", _route("api", "{type}", "{ns}", "{name}"), Handler.repo_info),
    ("GET", _route("api", "{type}", "{ns}", "{name}", "revision", "{rev*}"), _with_revision(Handler.repo_info)),
    ("GET", _route("api", "{type}", "{ns}", "{name}", "tree", "{rev*}"), _with_revision(Handler.tree)),
    ("POST", _route("api", "{type}", "{ns}", "{name}", "preupload", "{rev*}"), _with_revision(Handler.preupload)),
    ("POST", _route("api", "{type}", "{ns}", "{name}", "commit", "{rev*}"), _with_revision(Handler.commit)),
    ("POST", _route("api", "{type}", "{ns}", "{name}", "branch", "{branch}"), Handler.create_branch),
    ("POST", _route("{parts*}"), lambda h, *p: h.lfs_batch(*p) if p[-4:] == ("info", "lfs", "objects", "batch")
     and p[-5].endswith(".git") else _no_route(h)),
    ("GET", _route("{parts*}"), lambda h, *p: h.resolve_file(*p) if _is_resolve(p) else _no_route(h)),
]


def _is_resolve(parts: tuple[str, ...]) -> bool:
    offset = 1 if parts and parts[0] in ("datasets", "spaces") else 0
    return len(parts) >= offset + 5 and parts[offset + 2] == "resolve"


def _no_route(handler: Handler) -> None:
    raise HubError(404, None, f"no route for {handler.command} {handler.path}")


class HubServer(ThreadingHTTPServer):
    """The local Hub: `HubServer(port, storage).start()` serves in a thread; `.url` is its endpoint."""

    daemon_threads = True

    def __init__(self, port: int = 0, storage: str | os.PathLike | None = None, *, host: str = "127.0.0.1",
                 lfs_min_size: int = LFS_MIN_SIZE, verbose: bool = False):
        super().__init__((host, port), Handler)
        self._tmp = None if storage is not None else tempfile.TemporaryDirectory(prefix="local-hub-")
        self.store = RepoStore(storage if storage is not None else self._tmp.name)
        self.lfs_min_size, self.verbose = lfs_min_size, verbose
        self.stats: dict[str, Any] = {"lfs_bytes": 0, "lfs_objects": 0, "regular_bytes": 0, "commits": 0,
                                      "commit_log": []}
        self._stats_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.announced: set[str] = set()  # LFS oids a batch request offered an upload URL for

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, **counts: Any) -> None:
        """Add to the received-bytes/commits record."""
        with self._stats_lock:
            for k, v in counts.items():
                self.stats[k] = self.stats[k] + v

    def snapshot(self) -> dict[str, Any]:
        """A copy of the record (safe to keep while the server runs)."""
        with self._stats_lock:
            return json.loads(json.dumps(self.stats))

    def start(self) -> "HubServer":
        """Serve in a daemon thread (for tests and benchmarks); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (and the temporary storage, if any)."""
        self.shutdown()
        self.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m publishing.local_hub --port N --storage DIR`: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m publishing.local_hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--storage", required=True, help="folder for repositories and objects (created if missing)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    server = HubServer(args.port, args.storage, verbose=args.verbose)
    print(f"Local Hub on {server.url} (storage {os.path.abspath(args.storage)}). Clients:\n"
          f"  export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_local", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


__all__ = ["HubServer", "RepoStore", "git_blob_sha1", "lfs_pointer", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
