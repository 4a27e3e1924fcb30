"""The loopback Hub and the olah mirror, driven through the real huggingface_hub and transformers clients."""

from __future__ import annotations

import json
import os
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, constants, get_session, hf_api, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import _cache_manager
from transformers import AutoModel, BertConfig, BertModel

from tests.hub_fixtures import OlahMirror, hub_clients_at
from tests.hub_server import HubServer

BIG = 10 * 1024 * 1024 + 12_345  # just over the Hub's 10 MB LFS threshold


def tiny_bert(seed: int = 0) -> BertModel:
    """A randomly initialised two-layer BERT: milliseconds per forward, weights a few hundred kB."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    return BertModel(config).eval()


def embed(model: BertModel) -> torch.Tensor:
    """The model's last hidden state for a fixed sentence of token ids."""
    input_ids = torch.tensor([[5, 17, 42, 98, 3, 0]])
    with torch.no_grad():
        return model(input_ids=input_ids).last_hidden_state


@pytest.fixture
def sample_folder(tmp_path: Path) -> Path:
    """A small text file, and a binary of incompressible bytes just over 10 MB under a name no LFS pattern covers."""
    folder = tmp_path / "upload"
    (folder / "nested").mkdir(parents=True)
    (folder / "notes.txt").write_text("mIoU 0.42 on the tiny split\n")
    (folder / "nested" / "payload.dat").write_bytes(os.urandom(BIG))
    return folder


def test_whoami_through_the_patched_module_level_client(hub_env: HubServer) -> None:
    assert HfApi().whoami()["name"] == "user"
    # huggingface_hub.whoami is bound to an HfApi built at import time, before HF_ENDPOINT was set.
    assert huggingface_hub.whoami()["name"] == "user"
    assert constants.ENDPOINT == hub_env.url
    assert hub_env.requests.count(("GET", "/api/whoami-v2")) == 2


def test_hub_clients_at_repoints_and_then_restores_the_libraries(hub_server: HubServer, tmp_path: Path) -> None:
    def state() -> tuple[str, ...]:
        return (
            constants.ENDPOINT,
            hf_api.api.endpoint,
            constants.HF_HUB_CACHE,
            _cache_manager.HF_HUB_CACHE,
            str(constants.HF_HUB_DISABLE_XET),
            str(os.environ.get("HF_TOKEN")),
        )

    before = state()
    cache = str(tmp_path / "home" / "hub")
    with pytest.MonkeyPatch.context() as patch, hub_clients_at(patch, hub_server.url, "hf_x", tmp_path / "home"):
        assert state() == (hub_server.url, hub_server.url, cache, cache, "True", "hf_x")
    assert state() == before


def test_chunked_request_bodies_are_read(hub_env: HubServer) -> None:
    body = json.dumps({"name": "chunked", "organization": "user", "visibility": "private"}).encode()
    response = get_session().post(
        f"{hub_env.url}/api/repos/create",
        content=iter([body[:9], body[9:]]),
        headers={"Authorization": f"Bearer {hub_env.token}"},
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200 and hub_env.repo("user/chunked").private


def test_create_repo_records_privacy_and_honours_exist_ok(hub_env: HubServer) -> None:
    api = HfApi()
    url = api.create_repo("user/secret", private=True)
    assert url.repo_id == "user/secret" and url.startswith(hub_env.url)
    assert hub_env.repo("user/secret").private and api.model_info("user/secret").private
    assert not hub_env.repo(api.create_repo("user/open").repo_id).private
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("user/secret")
    assert conflict.value.response.status_code == 409
    assert api.create_repo("user/secret", exist_ok=True).repo_id == "user/secret"
    # Like the Hub, a new repo starts with a commit holding .gitattributes.
    assert api.list_repo_files("user/secret") == [".gitattributes"]


def test_upload_folder_stores_exact_bytes_and_sends_the_binary_through_lfs(
    hub_env: HubServer, sample_folder: Path
) -> None:
    api = HfApi()
    api.create_repo("user/data")
    commit = api.upload_folder(repo_id="user/data", folder_path=sample_folder)

    for name in ("notes.txt", "nested/payload.dat"):
        stored = hub_env.stored_file("user/data", name)
        assert stored.is_relative_to(hub_env.root)
        assert stored.read_bytes() == (sample_folder / name).read_bytes()
    assert hub_env.repo("user/data").branches["main"] == commit.oid
    lfs_puts = [request for request in hub_env.requests if request.method == "PUT"]
    assert len(lfs_puts) == 1 and lfs_puts[0].path.startswith("/_lfs/objects/")
    assert ("POST", "/user/data.git/info/lfs/objects/batch") in hub_env.requests
    assert ("POST", "/user/data.git/info/lfs/objects/verify") in hub_env.requests
    tree = {entry.path: entry for entry in api.list_repo_tree("user/data", recursive=True)}
    assert tree["nested/payload.dat"].lfs.size == BIG and tree["notes.txt"].lfs is None


def test_downloads_return_the_uploaded_bytes(hub_env: HubServer, sample_folder: Path) -> None:
    api = HfApi()
    api.create_repo("user/data")
    commit = api.upload_folder(repo_id="user/data", folder_path=sample_folder)

    snapshot = Path(snapshot_download("user/data"))
    for name in ("notes.txt", "nested/payload.dat"):
        original = (sample_folder / name).read_bytes()
        assert Path(hf_hub_download("user/data", name)).read_bytes() == original
        assert (snapshot / name).read_bytes() == original
    assert snapshot.name == commit.oid and snapshot.is_relative_to(constants.HF_HUB_CACHE)
    info = api.model_info("user/data", files_metadata=True)
    assert info.sha == commit.oid
    siblings = {sibling.rfilename: sibling for sibling in info.siblings}
    assert siblings["nested/payload.dat"].size == BIG and siblings["nested/payload.dat"].lfs is not None
    assert siblings["notes.txt"].lfs is None
    assert api.list_repo_files("user/data") == [".gitattributes", "nested/payload.dat", "notes.txt"]
    assert [entry.path for entry in api.list_repo_tree("user/data")] == [".gitattributes", "nested", "notes.txt"]


def test_a_second_commit_deletes_a_file_and_keeps_history(hub_env: HubServer) -> None:
    api = HfApi()
    api.create_repo("user/notes")
    first = api.upload_file(path_or_fileobj=b"keep", path_in_repo="keep.txt", repo_id="user/notes")
    api.upload_file(path_or_fileobj=b"drop", path_in_repo="drop.txt", repo_id="user/notes")
    second = api.delete_file("drop.txt", repo_id="user/notes")

    assert second.oid != first.oid and len(second.oid) == 40
    assert api.list_repo_files("user/notes") == [".gitattributes", "keep.txt"]
    assert api.model_info("user/notes").sha == second.oid
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/notes", "drop.txt")
    with pytest.raises(EntryNotFoundError):
        api.delete_file("drop.txt", repo_id="user/notes")
    assert Path(hf_hub_download("user/notes", "keep.txt", revision=first.oid)).read_bytes() == b"keep"


def test_unknown_repos_and_files_raise_the_hub_errors(hub_env: HubServer) -> None:
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/nope")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/nope", "config.json")
    with pytest.raises(RepositoryNotFoundError):  # a repo id without namespace, as in from_pretrained("gpt2")
        hf_hub_download("gpt2", "config.json")
    api.create_repo("user/empty")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/empty", "config.json")


def test_endpoints_the_hub_lacks_fail_loudly(hub_env: HubServer) -> None:
    HfApi().create_repo("user/branchy")
    with pytest.raises(HfHubHTTPError, match="does not implement") as missing:
        HfApi().create_branch("user/branchy", branch="dev")
    assert missing.value.response.status_code == 501


def test_private_repos_and_writes_need_the_token(hub_env: HubServer) -> None:
    anonymous = HfApi(token=False)
    with pytest.raises(HfHubHTTPError) as unauthenticated:
        anonymous.create_repo("user/anon")
    assert unauthenticated.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as wrong_token:
        HfApi(token="hf_wrong").upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="user/anon")
    assert wrong_token.value.response.status_code == 401
    HfApi().create_repo("user/hidden", private=True)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info("user/hidden")
    assert HfApi().model_info("user/hidden").private


def test_the_token_is_written_nowhere(hub_env: HubServer, sample_folder: Path) -> None:
    api = HfApi()
    api.create_repo("user/data", private=True)
    api.upload_folder(repo_id="user/data", folder_path=sample_folder)
    snapshot_download("user/data")

    token = hub_env.token.encode()
    scanned = [path for root in (hub_env.root, Path(constants.HF_HOME)) for path in root.rglob("*") if path.is_file()]
    assert len(scanned) >= 4  # both trees really hold the uploaded and downloaded files
    assert [path for path in scanned if token in path.read_bytes()] == []


def test_transformers_push_to_hub_then_from_pretrained(hub_env: HubServer) -> None:
    model = tiny_bert()
    commit = model.push_to_hub("user/tiny")

    files = HfApi().list_repo_files("user/tiny")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert hub_env.repo("user/tiny").commits[commit.oid].files["model.safetensors"].lfs
    for cls in (BertModel, AutoModel):
        loaded = cls.from_pretrained("user/tiny")
        assert isinstance(loaded, BertModel)
        torch.testing.assert_close(embed(loaded), embed(model), rtol=0, atol=0)


def test_olah_serves_a_git_mirror_to_from_pretrained(olah_env: OlahMirror, tmp_path: Path) -> None:
    model = tiny_bert(seed=1)
    model.save_pretrained(tmp_path / "tiny")
    sha = olah_env.publish("user/tiny", tmp_path / "tiny")

    loaded = AutoModel.from_pretrained("user/tiny")
    torch.testing.assert_close(embed(loaded), embed(model), rtol=0, atol=0)
    tree = {entry.path: entry for entry in HfApi().list_repo_tree("user/tiny")}
    assert tree["model.safetensors"].lfs is not None and tree["config.json"].lfs is None
    assert HfApi().model_info("user/tiny", revision="main").sha == sha
