"""End-to-end tests of `LocalHub` through the real huggingface_hub / transformers clients."""

import http.client
import json
import threading
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session
from safetensors.torch import load_file, save_file

try:
    from hub_server import USER, LocalHub, set_hf_offline
except ImportError:  # if tests/ ever becomes a package
    from tests.hub_server import USER, LocalHub, set_hf_offline

REPO = f"{USER}/demo"


@pytest.fixture
def model_folder(tmp_path):
    """A folder with a config.json and a ~2 MB model.safetensors."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 32}))
    torch.manual_seed(0)
    save_file({"weight": torch.randn(512, 1024)}, str(folder / "model.safetensors"))  # 2 MiB of float32
    return folder


def _push_folder(folder: Path, repo_id: str = REPO) -> str:
    api = HfApi()
    api.create_repo(repo_id)
    return api.upload_folder(repo_id=repo_id, folder_path=folder).oid


def test_upload_folder_then_download_same_bytes(local_hub, model_folder):
    commit = _push_folder(model_folder)

    api = HfApi()
    assert sorted(api.list_repo_files(REPO)) == [".gitattributes", "config.json", "model.safetensors"]
    assert api.model_info(REPO).sha == commit
    for name in ("config.json", "model.safetensors"):
        path = hf_hub_download(REPO, name)
        assert Path(path).read_bytes() == (model_folder / name).read_bytes()
        assert f"snapshots/{commit}/" in Path(path).as_posix()
    assert torch.equal(load_file(hf_hub_download(REPO, "model.safetensors"))["weight"],
                       load_file(model_folder / "model.safetensors")["weight"])
    # The ~2.7 MB commit payload went in one request: no LFS/Xet route was ever asked for.
    assert local_hub.unknown_requests == []


def test_create_repo_exist_ok(local_hub):
    api = HfApi()
    url = api.create_repo("demo")  # no namespace: goes to the token's user
    assert url.repo_id == REPO and url.startswith(local_hub.endpoint)
    assert huggingface_hub.create_repo(REPO, exist_ok=True).repo_id == REPO  # module-level HfApi
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo(REPO)
    assert info.value.response.status_code == 409


def test_whoami(local_hub):
    assert HfApi().whoami()["name"] == USER


def test_snapshot_download(local_hub, model_folder):
    (model_folder / "sub").mkdir()
    (model_folder / "sub" / "notes.txt").write_text("nested")
    commit = _push_folder(model_folder)

    snapshot = Path(snapshot_download(REPO))
    assert snapshot.name == commit
    for name in ("config.json", "model.safetensors", "sub/notes.txt"):
        assert (snapshot / name).read_bytes() == (model_folder / name).read_bytes()
    listing = {f.path for f in HfApi().list_repo_tree(REPO)}  # non-recursive: the folder, not its files
    assert listing == {".gitattributes", "config.json", "model.safetensors", "sub"}


def test_revision_sha_gives_earlier_content(local_hub):
    api = HfApi()
    api.create_repo(REPO)
    first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="weights.txt", repo_id=REPO).oid
    second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="weights.txt", repo_id=REPO).oid
    assert first != second

    assert Path(hf_hub_download(REPO, "weights.txt", revision=first)).read_bytes() == b"version 1"
    assert Path(hf_hub_download(REPO, "weights.txt")).read_bytes() == b"version 2"
    assert Path(hf_hub_download(REPO, "weights.txt", revision=second)).read_bytes() == b"version 2"
    assert api.model_info(REPO, revision=first).sha == first
    assert Path(snapshot_download(REPO, revision=first), "weights.txt").read_bytes() == b"version 1"


def test_unchanged_files_are_not_committed_again(local_hub, model_folder):
    first = _push_folder(model_folder)
    again = HfApi().upload_folder(repo_id=REPO, folder_path=model_folder).oid
    assert again == first  # preupload returned the remote oids, so the client skipped the commit


def test_missing_repo(local_hub):
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{USER}/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(f"{USER}/missing")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(f"{USER}/missing")


def test_missing_file_and_revision(local_hub, model_folder):
    _push_folder(model_folder)
    with pytest.raises(RemoteEntryNotFoundError) as info:
        hf_hub_download(REPO, "nope.json")
    assert isinstance(info.value, EntryNotFoundError)
    assert not HfApi().file_exists(REPO, "nope.json")
    assert HfApi().file_exists(REPO, "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="0" * 40)


def test_offline_mode_reads_from_cache(local_hub, model_folder, monkeypatch):
    _push_folder(model_folder)
    online = hf_hub_download(REPO, "model.safetensors")
    snapshot = snapshot_download(REPO)

    local_hub.stop()  # nothing to talk to any more
    set_hf_offline(monkeypatch)
    assert hf_hub_download(REPO, "model.safetensors") == online
    assert snapshot_download(REPO) == snapshot


def test_unknown_route_is_logged(local_hub):
    response = get_session().get(f"{local_hub.endpoint}/api/not-a-route")
    assert response.status_code == 404
    assert local_hub.unknown_requests == ["GET /api/not-a-route"]


def test_stop_joins_all_threads():
    before = set(threading.enumerate())
    with LocalHub() as hub:
        conn = http.client.HTTPConnection("127.0.0.1", int(hub.endpoint.rsplit(":", 1)[1]), timeout=5)
        conn.request("GET", "/api/whoami-v2")
        assert conn.getresponse().read()  # the keep-alive connection stays open
    assert set(threading.enumerate()) - before == set()
    conn.close()


def test_transformers_push_to_hub_and_from_pretrained(local_hub, monkeypatch):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
    )
    model = BertModel(config)
    model.push_to_hub(REPO)
    assert {"config.json", "model.safetensors", "README.md"} <= set(HfApi().list_repo_files(REPO))

    def assert_same_weights(loaded):
        expected, actual = model.state_dict(), loaded.state_dict()
        assert expected.keys() == actual.keys()
        for name in expected:
            assert torch.equal(expected[name], actual[name]), name

    assert_same_weights(BertModel.from_pretrained(REPO))

    local_hub.stop()
    set_hf_offline(monkeypatch)
    assert_same_weights(BertModel.from_pretrained(REPO))
