"""A loopback Hugging Face Hub: enough of the Hub's HTTP API for huggingface_hub and transformers to push and pull.

The real clients run unchanged against it: `create_repo`, `upload_folder` / `create_commit` (preupload, git-LFS
basic transfer, NDJSON commit), `push_to_hub`, `model_info`, `list_repo_tree`, `hf_hub_download`,
`snapshot_download` and `from_pretrained`. It listens on 127.0.0.1 only.

File contents are stored on disk under `root/objects/<sha256>`; repositories, commits and the request log live in
memory. The token is compared in memory and never written anywhere. Differences from the real Hub are listed in
`HubServer`'s docstring.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import secrets
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# The Hub sends any file of 10 MB or more to LFS, whatever its name.
LFS_MIN_SIZE = 10 * 1024 * 1024
# What the Hub writes into every new repository's first commit (abridged): names that always go to LFS.
_LFS_PATTERNS = (
    "*.bin",
    "*.safetensors",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.onnx",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.pkl",
    "*.pickle",
    "*.zip",
    "*.gz",
    "*.tar",
    "*.tflite",
    "*tfevents*",
)
DEFAULT_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in _LFS_PATTERNS)
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", None: "model"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class LoggedRequest(NamedTuple):
    method: str
    path: str  # the URL path as sent, without the query string


class HubError(Exception):
    """An error answer: its status, and the `X-Error-Code` huggingface_hub maps to an exception class."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.body = status, message, {"error": message, **(body or {})}
        header_safe = message.encode("ascii", "replace").decode()  # HTTP headers are latin-1; paths may not be
        self.headers = {**({"X-Error-Code": code} if code else {}), "X-Error-Message": header_safe, **(headers or {})}


@dataclass(frozen=True)
class Entry:
    """A file in a commit. Its bytes are the object named by `sha256`; `oid` is git's blob id for it."""

    size: int
    sha256: str
    oid: str  # git blob sha1 of the content, or of the LFS pointer for LFS files (as the Hub reports it)
    lfs: bool


@dataclass(frozen=True)
class Commit:
    sha: str
    title: str
    date: str
    files: dict[str, Entry]  # the whole tree at this commit: path -> entry


@dataclass
class Repo:
    repo_type: str  # "model", "dataset" or "space"
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha


class HubServer:
    """A Hub on `http://127.0.0.1:<free port>`, storing what it receives under `root`.

    Use it as a context manager (or `start()` / `stop()`). `requests` logs every request's method and path.

    Where it differs from the real Hub:
    - no Xet: clients must run with `HF_HUB_DISABLE_XET=1`, so uploads use the legacy git-LFS "basic" transfer and
      downloads plain HTTP; LFS bytes are PUT back to this server instead of a presigned S3 URL;
    - one token and one user (`user`, member of `orgs`); repos can only be created in those namespaces;
    - no rate limits, pagination, pull requests (`create_pr`), branches other than `main`, gating, tags or
      `.gitignore` handling; endpoints it lacks answer 501; downloads are served directly (the Hub redirects
      LFS files to its CDN);
    - LFS is chosen from the repo's `.gitattributes` patterns, the 10 MB limit and NUL bytes in the sample;
    - private repos read without a valid token answer 404 `RepoNotFound` (the Hub sometimes answers 401).
    """

    def __init__(self, root: Path, token: str, user: str = "user", orgs: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.token, self.user, self.orgs = token, user, orgs
        self.requests: list[LoggedRequest] = []
        self.errors: list[str] = []  # tracebacks of requests the server failed on (answered 501)
        self._repos: dict[tuple[str, str], Repo] = {}
        self._expected_uploads: dict[str, int] = {}  # LFS oid -> size announced by a batch call
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Start serving on a free port of 127.0.0.1 in a daemon thread; returns self."""
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # idle keep-alive connections must not hold up stop()
        self._httpd.hub = self  # type: ignore[attr-defined]
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint to give clients as `HF_ENDPOINT`."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- inspection, for tests --------------------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The repository as the server holds it; raises KeyError if it does not exist."""
        return self._repos[(repo_type, repo_id)]

    def stored_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> Path:
        """Where the bytes of `path` at `revision` lie on disk; raises HubError if there is no such file."""
        commit = self.resolve(self.repo(repo_id, repo_type), revision)
        if path not in commit.files:
            raise HubError(404, f"{path} not found at {commit.sha}", "EntryNotFound")
        return self.object_path(commit.files[path].sha256)

    # -- storage --------------------------------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        """Where the object lies; raises HubError 400 unless `sha256` is one (it comes from requests)."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise HubError(400, f"Not a sha256 oid: {sha256!r}")
        return self.root / "objects" / sha256

    def store(self, data: bytes, lfs: bool = False) -> Entry:
        """Write bytes as a content-addressed object; returns their entry."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha256)
        if not path.exists():
            partial = path.with_suffix(f".{secrets.token_hex(4)}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)  # atomic, so a concurrent reader never sees half a file
        return _entry(sha256, len(data), data, lfs)

    def expect_upload(self, oid: str, size: int) -> None:
        with self._lock:
            self._expected_uploads[oid] = size

    def receive_upload(self, oid: str, data: bytes) -> None:
        """Store the bytes of an LFS PUT, checking them against what the batch call announced."""
        with self._lock:
            size = self._expected_uploads.pop(oid, None)
        if size is None:
            raise HubError(403, f"No upload was announced for LFS object {oid}")
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"LFS object {oid}: received {len(data)} bytes that do not match the oid and size")
        self.store(data, lfs=True)

    # -- repositories and commits ---------------------------------------------------------------------------------

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        """Create a repo with the Hub's initial commit (a `.gitattributes`); raises HubError 409 if it exists."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:  # with the url, which create_repo(exist_ok=True) returns
                url = self.repo_url(self._repos[(repo_type, repo_id)])
                raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
            repo = Repo(repo_type, repo_id, private, created_at=_now())
            self._repos[(repo_type, repo_id)] = repo
            files = {".gitattributes": self.store(DEFAULT_GITATTRIBUTES.encode())}
            self._add_commit(repo, "main", "initial commit", files)
            return repo

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def find_repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        """The repo, if it exists and the caller may see it; raises HubError 404 RepoNotFound otherwise."""
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """The commit a branch name or full commit sha names; raises HubError 404 RevisionNotFound otherwise."""
        sha = repo.branches.get(revision, revision)
        if sha not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def commit(self, repo: Repo, branch: str, header: dict[str, Any], operations: list[dict[str, Any]]) -> Commit:
        """Apply NDJSON commit operations on top of `branch` and move the branch to the new commit."""
        with self._lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} (only branches accept commits)", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if header.get("parentCommit") not in (None, head.sha):
                raise HubError(412, "A commit has happened since the parent commit. Please refresh and try again.")
            files = dict(head.files)
            for operation in operations:
                self._apply(files, operation["key"], operation["value"])
            return self._add_commit(repo, branch, header.get("summary", ""), files)

    def _apply(self, files: dict[str, Entry], key: str, value: dict[str, Any]) -> None:
        path = value["path"]
        if key == "file":
            content = value["content"]
            data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            files[path] = self.store(data)
        elif key == "lfsFile":
            oid = value["oid"]
            if not self.object_path(oid).exists():
                raise HubError(422, f"LFS object {oid} for {path} was never uploaded")
            files[path] = _entry(oid, self.object_path(oid).stat().st_size, None, lfs=True)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            inside = [name for name in files if name.startswith(path.rstrip("/") + "/")]
            if not inside:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for name in inside:
                del files[name]
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")

    def _add_commit(self, repo: Repo, branch: str, title: str, files: dict[str, Entry]) -> Commit:
        commit = Commit(secrets.token_hex(20), title, _now(), files)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    def upload_mode(self, commit: Commit, path: str, size: int, sample: bytes) -> str:
        """ "lfs" or "regular", as the Hub decides: `.gitattributes` patterns, the 10 MB limit, binary samples."""
        attributes = commit.files.get(".gitattributes")
        text = self.object_path(attributes.sha256).read_text() if attributes else ""
        patterns = [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]
        name = path.rsplit("/", 1)[-1]
        tracked = any(fnmatch.fnmatch(path if "/" in pattern else name, pattern) for pattern in patterns)
        return "lfs" if tracked or size >= LFS_MIN_SIZE or b"\0" in sample else "regular"

    def log(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append(LoggedRequest(method, path))


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing: routes each request to one `_<name>` method, which answers or raises HubError."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub: the client's connection pool reuses sockets
    server: ThreadingHTTPServer

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.hub.log(self.command, url.path)
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self.body = self._read_body()  # read before answering, so an error never leaves bytes on the socket
        try:
            for methods, pattern, name in _ROUTES:
                match = pattern.fullmatch(url.path)
                if match and self.command in methods:
                    args = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    return getattr(self, f"_{name}")(**args)
            raise _unrouted(self.command, url.path)
        except HubError as error:
            self._send_json(error.status, error.body, error.headers)
        except Exception as error:  # a server bug: keep the traceback, answer a status the client does not retry
            self.hub.errors.append(traceback.format_exc())
            self._send_json(501, {"error": f"loopback hub failed: {error!r}"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the hub keeps its own log in `requests`, and stderr would clutter test output."""

    # -- endpoints ------------------------------------------------------------------------------------------------

    def _whoami(self) -> None:
        self._require_token()
        orgs = [{"type": "org", "name": org} for org in self.hub.orgs]
        self._send_json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.hub.user,
                "fullname": self.hub.user,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
            },
        )

    def _create_repo(self) -> None:
        self._require_token()
        payload = self._json()
        namespace = payload.get("organization") or self.hub.user
        if namespace not in (self.hub.user, *self.hub.orgs):
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")
        # huggingface_hub 1.x+ sends "visibility"; older clients send "private".
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo = self.hub.create_repo(payload.get("type") or "model", f"{namespace}/{payload['name']}", private)
        self._send_json(200, {"url": self._repo_url(repo), "name": repo.repo_id, "id": repo.repo_id})

    def _validate_yaml(self) -> None:
        content = self._json().get("content", "")
        front_matter = re.match(r"---\r?\n(.*?)\r?\n---", content, flags=re.DOTALL)
        try:
            yaml.safe_load(front_matter[1]) if front_matter else None
        except yaml.YAMLError as error:
            return self._send_json(400, {"errors": [{"message": str(error)}], "warnings": []})
        self._send_json(200, {"errors": [], "warnings": []})

    def _preupload(self, kind: str, repo: str, rev: str) -> None:
        commit = self.hub.resolve(self._writable_repo(kind, repo), rev)
        answers = []
        for file in self._json()["files"]:
            mode = self.hub.upload_mode(commit, file["path"], file["size"], base64.b64decode(file["sample"]))
            existing = commit.files.get(file["path"])
            # The client skips files whose oid it computes equal: sha256 for LFS files, git blob sha1 otherwise.
            oid = None if existing is None else existing.sha256 if existing.lfs else existing.oid
            answers.append({"path": file["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json(200, {"files": answers})

    def _lfs_batch(self, repo: str, kind: str | None = None) -> None:
        target = self._writable_repo(kind, repo)
        request = self._json()
        if request.get("operation") != "upload":
            raise HubError(400, "This hub's LFS batch API only takes uploads (downloads go through /resolve)")
        verify = f"{self.hub.url}/{_URL_PREFIXES[target.repo_type]}{target.repo_id}.git/info/lfs/objects/verify"
        objects = []
        for obj in request["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self.hub.object_path(obj["oid"]).exists():  # no "actions": the client skips the upload
                self.hub.expect_upload(obj["oid"], obj["size"])
                upload = f"{self.hub.url}/_lfs/objects/{obj['oid']}"
                answer["actions"] = {
                    "upload": {"href": upload, "expires_in": 3600},
                    "verify": {"href": verify, "expires_in": 3600},
                }
            objects.append(answer)
        self._send_json(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> None:
        # Stands in for the presigned storage URL: no token, but only objects announced by a batch call.
        self.hub.receive_upload(oid, self.body)
        self._send_json(200, {})

    def _lfs_verify(self, repo: str, kind: str | None = None) -> None:
        self._writable_repo(kind, repo)
        request = self._json()
        path = self.hub.object_path(request["oid"])
        if not path.exists() or path.stat().st_size != request["size"]:
            raise HubError(404, f"LFS object {request['oid']} of size {request['size']} was not received")
        self._send_json(200, {})

    def _commit(self, kind: str, repo: str, rev: str) -> None:
        target = self._writable_repo(kind, repo)
        if self.query.get("create_pr") in ("1", "true", "True"):
            raise HubError(400, "Pull requests (create_pr) are not supported by the loopback hub")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "A commit payload starts with a header line")
        commit = self.hub.commit(target, rev, lines[0]["value"], lines[1:])
        self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.sha,
                "pullRequestUrl": None,
                "commitUrl": f"{self._repo_url(target)}/commit/{commit.sha}",
            },
        )

    def _repo_info(self, kind: str, repo: str, rev: str = "main") -> None:
        target = self._readable_repo(kind, repo)
        commit = self.hub.resolve(target, rev)
        with_blobs = self.query.get("blobs") in ("1", "true", "True")
        siblings = [_sibling(path, entry, with_blobs) for path, entry in sorted(commit.files.items())]
        self._send_json(
            200,
            {
                "_id": target.repo_id,
                "id": target.repo_id,
                "author": target.repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": target.created_at,
                "private": target.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            },
        )

    def _tree(self, kind: str, repo: str, rev: str, path: str = "") -> None:
        commit = self.hub.resolve(self._readable_repo(kind, repo), rev)
        recursive = self.query.get("recursive") in ("1", "true", "True")
        listing = _tree_listing(commit.files, path.strip("/"), recursive)
        if path.strip("/") and not listing:
            raise HubError(404, f"{path} is not a folder at {commit.sha}", "EntryNotFound")
        self._send_json(200, listing)

    def _resolve(self, repo: str, rev: str, path: str, kind: str | None = None) -> None:
        commit = self.hub.resolve(self._readable_repo(kind, repo), rev)
        entry = commit.files.get(path)
        if entry is None:  # the commit header lets the client cache the file's absence
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"ETag": f'"{entry.oid}"', "X-Repo-Commit": commit.sha, "Content-Type": "application/octet-stream"}
        if entry.lfs:  # file_download.py prefers these over ETag / Content-Length, as the Hub sends them
            headers |= {"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}
        self._send_file(self.hub.object_path(entry.sha256), entry.size, headers)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _authorized(self) -> bool:
        return secrets.compare_digest(self.headers.get("Authorization", ""), f"Bearer {self.hub.token}")

    def _require_token(self) -> None:
        if "Authorization" not in self.headers:
            raise HubError(401, "You must be authenticated to access this resource")
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _readable_repo(self, kind: str | None, repo_id: str) -> Repo:
        return self.hub.find_repo(_REPO_TYPES[kind], repo_id, self._authorized())

    def _writable_repo(self, kind: str | None, repo_id: str) -> Repo:
        self._require_token()
        return self._readable_repo(kind, repo_id)

    def _repo_url(self, repo: Repo) -> str:
        return self.hub.repo_url(repo)

    def _json(self) -> dict[str, Any]:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Request body is not JSON: {error}") from None

    def _read_body(self) -> bytes:
        """The request body, de-chunked: the client streams file uploads with chunked transfer encoding."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF closing each chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, up to the closing blank line
            pass
        return b"".join(chunks)

    def _send_json(
        self, status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        data = json.dumps(body).encode()
        self._send_head(status, len(data), {"Content-Type": content_type, **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_file(self, path: Path, size: int, headers: dict[str, str]) -> None:
        self._send_head(200, size, headers)
        if self.command == "HEAD":
            return
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                self.wfile.write(chunk)

    def _send_head(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()


_API = r"/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_GIT = r"/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
_BARE_REPO = re.compile(r"/(?:api/(?:models|datasets|spaces)/)?[^/]+(?:/(?:resolve|revision|tree)/.*)?")
_ROUTES = [
    (methods.split("|"), re.compile(pattern), name)
    for methods, pattern, name in (
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", _GIT + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("POST", _GIT + r"\.git/info/lfs/objects/verify", "lfs_verify"),
        ("PUT", r"/_lfs/objects/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("GET|HEAD", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    )
]


def _unrouted(method: str, path: str) -> HubError:
    """A repo id without namespace names a repo this hub cannot hold; anything else is an endpoint it lacks."""
    if _BARE_REPO.fullmatch(path):  # e.g. from_pretrained("bert-base-uncased"): RepositoryNotFoundError
        return HubError(404, f"Repository not found: {path}", "RepoNotFound")
    # 501, not 404: the client neither retries it nor mistakes it for a missing repo or file.
    return HubError(501, f"The loopback hub does not implement {method} {path}")


def _entry(sha256: str, size: int, data: bytes | None, lfs: bool) -> Entry:
    """An entry; git stores a small pointer instead of an LFS file's content, so its blob id is the pointer's."""
    blob = _lfs_pointer(sha256, size) if lfs else data
    return Entry(size, sha256, _git_blob_oid(blob), lfs)


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sibling(path: str, entry: Entry, with_blobs: bool) -> dict[str, Any]:
    """A `siblings` item of model info; sizes and LFS details only with `?blobs=true`, as on the Hub."""
    if not with_blobs:
        return {"rfilename": path}
    lfs = {"sha256": entry.sha256, "size": entry.size, "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
    return {"rfilename": path, "size": entry.size, "blobId": entry.oid, **({"lfs": lfs} if entry.lfs else {})}


def _tree_listing(files: dict[str, Entry], folder: str, recursive: bool) -> list[dict[str, Any]]:
    """The /tree answer for `folder`: its files and sub-folders, or everything below it when recursive."""
    prefix = f"{folder}/" if folder else ""
    listing: dict[str, dict[str, Any]] = {}
    for path, entry in files.items():
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, min(len(parts) - 1, len(parts) if recursive else 1) + 1):
            directory = prefix + "/".join(parts[:depth])
            listing[directory] = {
                "type": "directory",
                "path": directory,
                "size": 0,
                "oid": hashlib.sha1(directory.encode()).hexdigest(),
            }
        if recursive or len(parts) == 1:
            listing[path] = {"type": "file", "path": path, "size": entry.size, "oid": entry.oid}
            if entry.lfs:
                pointer_size = len(_lfs_pointer(entry.sha256, entry.size))
                listing[path]["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": pointer_size}
    return [listing[path] for path in sorted(listing)]
