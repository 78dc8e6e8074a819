"""A tiny local Hugging Face Hub-compatible HTTP server for tests.

`LocalHub` implements just the part of the Hub HTTP API that `huggingface_hub` (2.4) and
`transformers` (5.x) use to create repos, commit files and download them again:

    GET    /api/whoami-v2
    POST   /api/repos/create
    DELETE /api/repos/delete
    POST   /api/validate-yaml
    GET    /api/{models|datasets|spaces}/{ns}/{name}[/revision/{rev}]
    GET    /api/{models|datasets|spaces}/{ns}/{name}/tree/{rev}[/{path}]
    POST   /api/{models|datasets|spaces}/{ns}/{name}/paths-info/{rev}
    POST   /api/{models|datasets|spaces}/{ns}/{name}/preupload/{rev}
    POST   /api/{models|datasets|spaces}/{ns}/{name}/commit/{rev}
    HEAD   /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}
    GET    /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}

Every file is stored as a plain git blob: the preupload endpoint answers "regular" for all
files, so the client sends their content base64-encoded inside the commit payload and never
tries LFS or Xet storage. Each repo has a single `main` branch; every commit keeps its own
snapshot so that `revision=<commit sha>` works. Blobs live in a temporary directory, the
rest of the state in memory. Unknown routes get a 404 JSON answer and are logged (and kept
in `LocalHub.unknown_requests`) so that a new client call is easy to spot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

USER = "local-user"
"""Name of the fake user that owns the token and repos created without a namespace."""

MAIN = "main"
_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # /api/{plural}/...
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # /{prefix}{id}/resolve/...
_URL_TYPES = {"datasets": "dataset", "spaces": "space"}  # first segment of a non-model file URL
# New repos start with one commit holding a .gitattributes file, like on the real Hub.
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """Git object id of a blob (what `git hash-object` prints), used by the Hub as file oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An error answer, with the `X-Error-Code` the client turns into a typed exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})


@dataclass
class Reply:
    """What a route returns: status, headers and a body (a dict/list is sent as JSON)."""

    status: int = 200
    body: bytes | dict | list | None = None
    headers: dict = field(default_factory=dict)


@dataclass
class Commit:
    """One commit: a full snapshot of the repo (path -> (blob oid, size))."""

    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, tuple[str, int]]


@dataclass
class Repo:
    """A repo with a single `main` branch and the history of its commits."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    main: str = ""  # oid of the head of `main`


class LocalHub:
    """Local Hub server on 127.0.0.1 with a random free port.

    Use as a context manager, or call `start()` / `stop()`. `endpoint` is the URL to give to the
    client (HF_ENDPOINT). `request_log` lists `(method, path, status)` of every request served.
    """

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.request_log: list[tuple[str, str, int]] = []
        self.unknown_requests: list[str] = []
        self._lock = threading.RLock()
        self._counter = 0
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Base URL of the running server, e.g. `http://127.0.0.1:54321`."""
        if self._server is None:
            raise RuntimeError("LocalHub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LocalHub":
        """Start serving in a background thread."""
        if self._server is not None:
            return self
        self._tmpdir = tempfile.TemporaryDirectory(prefix="localhub-")
        (Path(self._tmpdir.name) / "blobs").mkdir()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="LocalHub", daemon=True
        )
        self._thread.start()
        logger.info("LocalHub serving at %s", self.endpoint)
        return self

    def stop(self) -> None:
        """Stop the server, close open connections, join all threads and delete the storage."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # stop the accept loop
        server.close_connections()  # wake handler threads waiting on keep-alive connections
        server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- storage ---------------------------------------------------------------------------

    def _blob_path(self, oid: str) -> Path:
        assert self._tmpdir is not None
        return Path(self._tmpdir.name) / "blobs" / oid

    def _store_blob(self, data: bytes) -> str:
        oid = git_blob_oid(data)
        path = self._blob_path(oid)
        if not path.exists():
            path.write_bytes(data)
        return oid

    def _new_commit(self, repo: Repo, files: dict, title: str, description: str = "") -> Commit:
        self._counter += 1
        seed = json.dumps([repo.repo_id, repo.main, title, sorted(files.items()), time.time_ns(), self._counter])
        commit = Commit(
            oid=hashlib.sha1(seed.encode()).hexdigest(),
            parent=repo.main or None,
            title=title,
            description=description,
            date=_now(),
            files=files,
        )
        repo.commits[commit.oid] = commit
        repo.main = commit.oid
        return commit

    def _url(self, repo: Repo) -> str:
        return f"{self.endpoint}/{_URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def _get_repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> Commit:
        """Commit for `main` (or `refs/heads/main`), a full commit sha or a unique sha prefix."""
        if revision in (MAIN, "refs/heads/main"):
            return repo.commits[repo.main]
        if len(revision) >= 7:
            matches = [oid for oid in repo.commits if oid.startswith(revision.lower())]
            if len(matches) == 1:
                return repo.commits[matches[0]]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # -- routing ---------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers, body: bytes) -> Reply:
        """Answer one request. `raw_path` is the request target, still percent-encoded."""
        url = urlsplit(raw_path)
        parts = url.path.strip("/").split("/")  # split before unquoting: %2F stays inside a segment
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        authorized = (headers.get("Authorization") or "").startswith("Bearer ")
        try:
            with self._lock:
                reply = self._route(method, parts, query, body, authorized)
        except HubError as e:
            reply = Reply(e.status, {"error": e.message}, e.headers)
            if e.code:
                reply.headers["X-Error-Code"] = e.code
            reply.headers["X-Error-Message"] = e.message
        if reply is None:
            message = f"LocalHub: no route for {method} {raw_path}"
            logger.warning(message)
            self.unknown_requests.append(f"{method} {raw_path}")
            reply = Reply(404, {"error": message}, {"X-Error-Message": message})
        return reply

    def _route(self, method: str, parts: list[str], query: dict, body: bytes, authorized: bool) -> Reply | None:
        write = method in ("POST", "PUT", "DELETE") and parts[:2] != ["api", "validate-yaml"]
        if write and not authorized:
            raise HubError(401, "Invalid credentials in Authorization header")

        if parts[0] == "api":
            if method == "GET" and parts[1:] == ["whoami-v2"]:
                return self._whoami(authorized)
            if parts[1:] == ["repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body or b"{}"))
            if parts[1:] == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo(json.loads(body or b"{}"))
            if parts[1:] == ["validate-yaml"] and method == "POST":
                return Reply(200, {"errors": [], "warnings": []})
            if len(parts) >= 4 and parts[1] in _API_TYPES:
                repo = self._get_repo(_API_TYPES[parts[1]], f"{parts[2]}/{parts[3]}", authorized)
                return self._repo_api(method, repo, parts[4:], query, body)
            return None

        # File download: /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}
        repo_type = _URL_TYPES.get(parts[0], "model")
        if repo_type != "model":
            parts = parts[1:]
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            repo = self._get_repo(repo_type, f"{parts[0]}/{parts[1]}", authorized)
            return self._resolve_file(repo, unquote(parts[3]), unquote("/".join(parts[4:])))
        return None

    def _repo_api(self, method: str, repo: Repo, rest: list[str], query: dict, body: bytes) -> Reply | None:
        action = rest[0] if rest else ""
        revision = unquote(rest[1]) if len(rest) >= 2 else MAIN
        if method == "GET" and action in ("", "revision"):
            return self._repo_info(repo, self._resolve(repo, revision), blobs=query.get("blobs") == "true")
        if method == "GET" and action == "tree" and len(rest) >= 2:
            commit = self._resolve(repo, revision)
            path = unquote("/".join(rest[2:])).strip("/")
            return Reply(200, _tree(commit, path, recursive=query.get("recursive") == "true"))
        if method == "POST" and action == "paths-info" and len(rest) == 2:
            commit = self._resolve(repo, revision)
            paths = parse_qs(body.decode()).get("paths", [])
            return Reply(200, [entry for p in paths for entry in _tree_entry(commit, p.strip("/"))])
        if method == "POST" and action == "preupload" and len(rest) == 2:
            return self._preupload(self._resolve(repo, revision), json.loads(body))
        if method == "POST" and action == "commit" and len(rest) == 2:
            return self._commit(repo, revision, query, body)
        return None

    # -- handlers --------------------------------------------------------------------------

    def _whoami(self, authorized: bool) -> Reply:
        if not authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        return Reply(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": USER,
                "fullname": "Local Test User",
                "email": None,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            },
        )

    def _create_repo(self, payload: dict) -> Reply:
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIXES:
            raise HubError(400, f"Unsupported repo type: {repo_type}")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        existing = self.repos.get((repo_type, repo_id))
        if existing is not None:
            return Reply(409, {"error": f"You already created this {repo_type} repo", "url": self._url(existing)})
        private = payload.get("private") or payload.get("visibility") == "private"
        repo = Repo(repo_type, repo_id, private=bool(private), created_at=_now())
        gitattributes = {".gitattributes": (self._store_blob(_GITATTRIBUTES), len(_GITATTRIBUTES))}
        self._new_commit(repo, gitattributes, "initial commit")
        self.repos[(repo_type, repo_id)] = repo
        return Reply(200, {"url": self._url(repo), "name": repo_id, "id": repo.main[:24]})

    def _delete_repo(self, payload: dict) -> Reply:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        if self.repos.pop((repo_type, repo_id), None) is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return Reply(200, {})

    def _repo_info(self, repo: Repo, commit: Commit, blobs: bool) -> Reply:
        siblings = []
        for path, (oid, size) in sorted(commit.files.items()):
            siblings.append({"rfilename": path, **({"size": size, "blobId": oid} if blobs else {})})
        namespace = repo.repo_id.split("/")[0]
        return Reply(
            200,
            {
                "id": repo.repo_id,
                **({"modelId": repo.repo_id} if repo.repo_type == "model" else {}),
                "author": namespace,
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            },
        )

    def _preupload(self, commit: Commit, payload: dict) -> Reply:
        # Always "regular": content is sent inline in the commit, never through LFS/Xet storage.
        files = []
        for f in payload.get("files", []):
            remote = commit.files.get(f["path"])
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": remote[0] if remote else None,  # lets the client skip unchanged files
                }
            )
        return Reply(200, {"files": files, "commitOid": commit.oid})

    def _commit(self, repo: Repo, revision: str, query: dict, body: bytes) -> Reply:
        if query.get("create_pr") in ("1", "true"):
            raise HubError(400, "LocalHub does not support create_pr")
        self._resolve(repo, revision)  # 404 on unknown revision
        if revision not in (MAIN, "refs/heads/main"):
            raise HubError(400, f"LocalHub only supports commits to '{MAIN}', got '{revision}'")
        head = repo.commits[repo.main]
        files = dict(head.files)
        header: dict = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                raw = value["content"]
                data = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                files[value["path"]] = (self._store_blob(data), len(data))
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            else:  # "lfsFile" cannot happen since preupload never answers "lfs"
                raise HubError(400, f"LocalHub does not support commit operation '{key}'")
        parent = header.get("parentCommit")
        if parent and parent != head.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        commit = self._new_commit(repo, files, header.get("summary", ""), header.get("description", ""))
        return Reply(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
            },
        )

    def _resolve_file(self, repo: Repo, revision: str, path: str) -> Reply:
        commit = self._resolve(repo, revision)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        oid, _size = commit.files[path]  # Content-Length is set from the body
        headers = {
            "X-Repo-Commit": commit.oid,  # required: the client refuses a response without it
            "ETag": f'"{oid}"',  # required: names the blob in the client's cache
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        return Reply(200, self._blob_path(oid).read_bytes(), headers)


def _tree_entry(commit: Commit, path: str) -> list[dict]:
    """Tree listing entry for one path: a file, a directory, or nothing if it does not exist."""
    if path in commit.files:
        oid, size = commit.files[path]
        return [{"type": "file", "oid": oid, "size": size, "path": path}]
    if any(p.startswith(path + "/") for p in commit.files):
        oid = hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest()  # stable, fake tree oid
        return [{"type": "directory", "oid": oid, "size": 0, "path": path}]
    return []


def _tree(commit: Commit, path: str, recursive: bool) -> list[dict]:
    """Entries under `path` ("" is the root), like GET /api/models/{id}/tree/{rev}/{path}."""
    prefix = f"{path}/" if path else ""
    if path and not any(p.startswith(prefix) for p in commit.files):
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
    names: set[str] = set()
    for file_path in commit.files:
        if not file_path.startswith(prefix):
            continue
        parts = file_path[len(prefix) :].split("/")
        depth = len(parts) if recursive else 1
        names.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
    return [entry for name in sorted(names) for entry in _tree_entry(commit, name)]


class _Server(ThreadingHTTPServer):
    """HTTP server that remembers its open connections so `stop()` can close them."""

    daemon_threads = False  # server_close() then joins every handler thread
    block_on_close = True

    def __init__(self, hub: LocalHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, asks `LocalHub.handle` for the answer and writes it back."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub
    timeout = 30  # idle keep-alive connections are dropped after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)[:size]  # chunk data + CRLF
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        hub = self.server.hub
        try:
            reply = hub.handle(self.command, self.path, self.headers, self._read_body())
        except Exception:  # a bug in the server: report it loudly, answer 500
            logger.error("LocalHub failed on %s %s\n%s", self.command, self.path, traceback.format_exc())
            reply = Reply(500, {"error": "LocalHub internal error (see test log)"})
        body = reply.body
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            reply.headers.setdefault("Content-Type", "application/json")
        body = body or b""

        status = reply.status
        range_header = self.headers.get("Range")
        if status == 200 and self.command == "GET" and range_header and range_header.startswith("bytes="):
            start_s, _, end_s = range_header[len("bytes=") :].partition("-")
            start = int(start_s or 0)
            end = min(int(end_s), len(body) - 1) if end_s else len(body) - 1
            reply.headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body, status = body[start : end + 1], 206

        hub.request_log.append((self.command, self.path, status))
        self.send_response(status)
        for name, value in reply.headers.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
        logger.debug("%s - %s", self.address_string(), format % args)


# -- pointing the clients at a LocalHub ----------------------------------------------------

FAKE_TOKEN = "hf_local_test_token"
"""Token the fixture puts in HF_TOKEN; LocalHub accepts any bearer token."""


def patch_hf_environment(monkeypatch, endpoint: str, hf_home: Path) -> None:
    """Point `huggingface_hub` (and `transformers`) at `endpoint`, with all caches under `hf_home`.

    `monkeypatch` is a pytest MonkeyPatch; everything is restored when it is undone. Both the
    environment and the module-level values that `huggingface_hub` computed from it at import
    time are patched, since setting the environment alone has no effect after import.
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _cache_manager

    hf_home = Path(hf_home)
    paths = {
        "HF_HOME": hf_home,
        "HF_HUB_CACHE": hf_home / "hub",
        "HF_ASSETS_CACHE": hf_home / "assets",
        "HF_XET_CACHE": hf_home / "xet",
    }
    for name, value in {**paths, "HF_ENDPOINT": endpoint, "HF_TOKEN": FAKE_TOKEN}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    unset = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN"]
    unset += ["HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HUGGINGFACE_CO_STAGING"]
    for name in unset:
        monkeypatch.delenv(name, raising=False)

    patched = {
        # Every Hub URL is built from these two (hf_hub_url uses the template, HfApi the endpoint).
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        # Lets parse_hf_uri() recognise local URLs even when no endpoint is passed to it.
        "HF_URL_HOSTS": getattr(constants, "HF_URL_HOSTS", frozenset()) | {"127.0.0.1"},
        # Caches and token files: keep the user's ~/.cache/huggingface out of the tests.
        **{name: str(value) for name, value in paths.items()},
        "HUGGINGFACE_HUB_CACHE": str(paths["HF_HUB_CACHE"]),
        "HUGGINGFACE_ASSETS_CACHE": str(paths["HF_ASSETS_CACHE"]),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        # hf_xet is installed: without this, upload_folder() takes the Xet upload pipeline.
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in patched.items():
        if hasattr(constants, name):  # some names are missing from older huggingface_hub releases
            monkeypatch.setattr(constants, name, value)
    # `from ..constants import HF_HUB_CACHE` copy, default of scan_cache_dir().
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(paths["HF_HUB_CACHE"]))
    # Module-level HfApi() behind huggingface_hub.create_repo, upload_file, model_info, ...:
    # it read constants.ENDPOINT when huggingface_hub was imported.
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    # `datasets` builds its Hub URLs from values it read at import, too.
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        monkeypatch.setattr(datasets_config, "HF_ENDPOINT", endpoint)
        monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", False)
    reset_cached_clients()


def reset_cached_clients() -> None:
    """Drop client objects that remember an endpoint or open connections.

    - the shared httpx client of huggingface_hub (keep-alive connections to an old server);
    - transformers' lazily created `HfApi` (transformers.utils.hub._hf_api), which keeps the
      endpoint it saw when first used.
    """
    from huggingface_hub.utils import close_session

    close_session()
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        transformers_hub._hf_api = None


def set_hf_offline(monkeypatch, offline: bool = True) -> None:
    """Switch huggingface_hub/transformers offline mode (HF_HUB_OFFLINE) on or off."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
