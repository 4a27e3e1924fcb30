"""pytest plugin: Hugging Face Hub clients talking to servers on 127.0.0.1 instead of huggingface.co.

Load it with `pytest_plugins = ["tests.hub_fixtures"]` in tests/conftest.py (or `pytest -p tests.hub_fixtures`).

- `hub_server`: a fresh `tests.hub_server.HubServer` (push and pull), with `.url`, `.root`, `.requests`, `.token`.
- `hub_env`: `hub_server`, with huggingface_hub and transformers pointed at it for the test (see `hub_clients_at`).
- `olah_server`: olah, a Hub mirror, serving git repositories read-only; `.publish(repo_id, folder)` adds one.
- `olah_env`: `olah_server`, with the clients pointed at it. Use either `hub_env` or `olah_env` in a test, not both.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import constants, hf_api, hf_file_system
from huggingface_hub.utils import _http

from tests.hub_server import HubServer

# Settings that would send the clients elsewhere or read a developer's cache: unset for the test.
_UNSET = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_TOKEN_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_RESOURCE",
    "HUGGINGFACE_CO_STAGING",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_MODULES_CACHE",
)
# transformers modules that copy `HF_MODULES_CACHE` (where remote code is written) when imported.
_MODULES_CACHE_HOLDERS = (
    "transformers.utils.hub",
    "transformers.utils",
    "transformers.file_utils",
    "transformers.dynamic_module_utils",
)


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[HubServer]:
    """A loopback Hub storing under `tmp_path/hub`, with a random dummy token; fails the test on a server bug."""
    with HubServer(tmp_path / "hub", token=f"hf_loopback_{secrets.token_hex(16)}") as server:
        yield server
    assert not server.errors, "the loopback hub failed on a request:\n" + "\n".join(server.errors)


@pytest.fixture
def hub_env(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """`hub_server`, with huggingface_hub and transformers using it, its token and `tmp_path/hf_home`."""
    with hub_clients_at(monkeypatch, hub_server.url, hub_server.token, tmp_path / "hf_home"):
        yield hub_server


@contextmanager
def hub_clients_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, hf_home: Path) -> Iterator[None]:
    """Point huggingface_hub and transformers at `endpoint`, in this process, until `monkeypatch` undoes it.

    Sets HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_DISABLE_XET=1, HF_HUB_OFFLINE=0 and HF_HUB_DISABLE_TELEMETRY=1, adds
    the loopback to NO_PROXY, then re-derives everything the libraries computed from the environment at import time.
    """
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), "127.0.0.1"]))
    environment = {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    _reload_constants(monkeypatch)
    _repoint_import_time_objects(monkeypatch, endpoint)
    modules_before = set(sys.modules)
    _http.close_session()  # the shared httpx client read proxy settings and pooled sockets for the old endpoint
    try:
        yield
    finally:
        _http.close_session()
        for name in set(sys.modules) - modules_before:
            if name.startswith("transformers_modules"):  # remote code imported from this test's HF_HOME
                del sys.modules[name]


def _reload_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch `huggingface_hub.constants` with the values its source gives in the current environment.

    Executing constants.py afresh keeps every derived value right (HF_HUB_CACHE, HF_TOKEN_PATH, HF_URL_HOSTS, ...)
    across huggingface_hub versions. Modules that did `from ..constants import NAME` hold the old object: those in
    huggingface_hub are patched too (today utils._cache_manager, utils._cache_assets, utils._git_credential, ...).
    """
    spec = importlib.util.spec_from_file_location("_hub_constants_for_tests", constants.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    copies = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("huggingface_hub.") and module is not None and module is not constants
    ]
    for name, value in vars(fresh).items():
        old = vars(constants).get(name)
        if not name.isupper() or old == value:
            continue
        monkeypatch.setattr(constants, name, value)
        for module in copies:  # vars(), not getattr(): lazy modules would import on a missing attribute
            if name in vars(module) and vars(module)[name] is old:
                monkeypatch.setattr(module, name, value)


def _repoint_import_time_objects(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Objects built from the old constants at import time: Hub clients, trusted origins, remote-code paths."""
    # `huggingface_hub.whoami`, `create_repo`, `upload_folder`, ... are bound methods of this module-level HfApi.
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(hf_file_system.hffs, "endpoint", endpoint)
    monkeypatch.setattr(hf_file_system.hffs._api, "endpoint", endpoint)
    hf_file_system.hffs.invalidate_cache()  # listings of a repo with the same name on another server
    hf_file_system.HfFileSystem.clear_instance_cache()
    # Origins allowed to receive the token when following redirects (built from the import-time ENDPOINT).
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})
    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None:
        monkeypatch.setattr(hub, "_hf_api", None)  # transformers' shared HfApi keeps the endpoint it was built with
        modules_cache = os.path.join(constants.HF_HOME, "modules")
        for name in _MODULES_CACHE_HOLDERS:
            module = sys.modules.get(name)
            if module is not None and "HF_MODULES_CACHE" in vars(module):
                monkeypatch.setattr(module, "HF_MODULES_CACHE", modules_cache)
        monkeypatch.setattr(sys, "path", list(sys.path))  # loading remote code appends HF_MODULES_CACHE to it


# -- olah: an independent server for the pull side ---------------------------------------------------------------

OLAH_REQUIREMENT = "olah==0.5.4"
_OLAH_CONFIG = """\
[basic]
host = "127.0.0.1"
port = {port}
repos-path = {repos}
mirrors-path = [{mirrors}]

[accessibility]
offline = true
"""
# A reproducible git that ignores the developer's config (hooks, signing, git-lfs filters).
_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "segtune tests",
    "GIT_AUTHOR_EMAIL": "tests@localhost",
    "GIT_COMMITTER_NAME": "segtune tests",
    "GIT_COMMITTER_EMAIL": "tests@localhost",
}


@dataclass
class OlahMirror:
    """A running olah in offline mode, serving the git repositories under `mirrors/models/<namespace>/<name>`."""

    url: str
    mirrors: Path
    log: Path  # olah's stdout and stderr

    def publish(self, repo_id: str, folder: Path, lfs_patterns: tuple[str, ...] = ("*.safetensors",)) -> str:
        """Commit `folder`'s files as model repo `repo_id` on branch main; returns the commit sha.

        Files matching `lfs_patterns` are stored as git-lfs stores them: a pointer blob in git and the bytes under
        .git/lfs/objects/, where olah looks them up (the git-lfs program itself is not needed). Other files are
        plain git blobs, which olah serves whatever their size.
        """
        repo = self.mirrors / "models" / repo_id
        shutil.copytree(folder, repo)
        _git(repo, "init", "--quiet", "--initial-branch=main")
        for pattern in lfs_patterns:
            for file in repo.glob(pattern):
                _move_to_lfs(repo, file)
        _git(repo, "add", "--all")
        _git(repo, "commit", "--quiet", "--message", f"publish {repo_id}")
        return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def olah_server(tmp_path: Path) -> Iterator[OlahMirror]:
    """olah on a free port of 127.0.0.1, offline (it never contacts huggingface.co), with no repositories yet.

    Skips the test if olah or git is missing, or if olah does not start within 60 s.
    """
    if importlib.util.find_spec("olah") is None:
        pytest.skip(f"olah is not installed: pip install '{OLAH_REQUIREMENT}'")
    if shutil.which("git") is None:
        pytest.skip("git is not installed; the olah mirror serves git repositories")
    root = tmp_path / "olah"
    (root / "mirrors" / "models").mkdir(parents=True)
    port = _free_port()
    config = root / "olah.toml"
    # json.dumps quotes paths as TOML basic strings.
    config.write_text(
        _OLAH_CONFIG.format(port=port, repos=json.dumps(str(root / "cache")), mirrors=json.dumps(str(root / "mirrors")))
    )
    mirror = OlahMirror(f"http://127.0.0.1:{port}", root / "mirrors", root / "olah.log")
    with mirror.log.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "--config", str(config), "--log-path", str(root / "logs")],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_port(port, process, mirror.log, timeout=60)
            yield mirror
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def olah_env(olah_server: OlahMirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OlahMirror]:
    """`olah_server`, with huggingface_hub and transformers using it (olah ignores the dummy token)."""
    with hub_clients_at(monkeypatch, olah_server.url, "hf_olah_dummy_token", tmp_path / "hf_home"):
        _adapter_probe_answered_as_the_hub(monkeypatch, olah_server.mirrors / "models")
        yield olah_server


def _adapter_probe_answered_as_the_hub(monkeypatch: pytest.MonkeyPatch, models: Path) -> None:
    """Where peft is installed, transformers' `from_pretrained` first asks every repo for `adapter_config.json`.

    The Hub answers a file missing from a repo with 404 EntryNotFound, and the probe returns None. olah 0.5.4 offline
    answers 401 RepoNotFound instead, which the probe raises as a missing repo. For the repos olah mirrors, the probe
    gets the Hub's answer; every module holding transformers' function is given it (as `_reload_constants` does).
    """
    from transformers.utils import peft_utils

    original = peft_utils.find_adapter_config_file

    def probe(model_id: str, *args, **kwargs) -> str | None:
        repo = models / str(model_id)
        if repo.is_dir() and not (repo / peft_utils.ADAPTER_CONFIG_NAME).exists():
            return None
        return original(model_id, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("transformers") and module is not None and vars(module).get(original.__name__) is original:
            monkeypatch.setattr(module, original.__name__, probe)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env={**os.environ, **_GIT_ENV}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _move_to_lfs(repo: Path, file: Path) -> None:
    """Replace `file` by a git-lfs pointer, moving its bytes to .git/lfs/objects/<oid[:2]>/<oid[2:4]>/<oid>."""
    data = file.read_bytes()
    oid = hashlib.sha256(data).hexdigest()
    target = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    file.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n")


def _free_port() -> int:
    """A port the OS has just handed out on 127.0.0.1 (olah binds it a moment later; a clash is very unlikely)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Return once something accepts connections on the port; skip the test if olah exits or never listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.skip(f"olah exited with status {process.returncode}:\n{log.read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.skip(f"olah did not listen on 127.0.0.1:{port} within {timeout:.0f} s:\n{log.read_text()[-2000:]}")
