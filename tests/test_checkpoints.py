"""Checkpoint fetching through the real huggingface_hub client against a loopback fake hub."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants as hf_constants
import pytest

from imhibench.common import hashing, provenance
from imhibench.common.errors import ImhiBenchError
from imhibench.fetch import checkpoints
from imhibench.fetch.checkpoints import MANIFEST_NAME, fetch_checkpoint, use_local_checkpoint

try:
    from tests.fake_hub import FakeHub, make_sha
except ImportError:  # tests/ itself is on sys.path (pytest "prepend" import mode)
    from fake_hub import FakeHub, make_sha  # type: ignore[no-redef]

SHA_OLD = make_sha("tiny-bert v1")
SHA_NEW = make_sha("tiny-bert v2")
SHA_BIN = make_sha("bin-only")
SHA_GATED = make_sha("gated")
TOKEN = "hf_fake_secret_token"
README = b"# tiny model card\n"
# chat templates as files of their own (transformers >= 4.43 saves them so)
TEMPLATES = {
    "chat_template.jinja": b"{% for m in messages %}{{ m['content'] }}{% endfor %}",
    "additional_chat_templates/tool_use.jinja": b"{{ messages[0]['content'] }}",
}
DEFAULT_FILES = ["config.json", "model.safetensors", "vocab.txt", *TEMPLATES]


def _tiny_bert(tmp: Path, layers: int, safetensors: bool = True) -> dict[str, bytes]:
    """Files of a tiny random BERT as save_pretrained writes them."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(layers)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    model = BertModel(config)
    out = tmp / f"bert-{layers}-{safetensors}"
    model.save_pretrained(out)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    if not safetensors:
        del files["model.safetensors"]
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, out / "pytorch_model.bin")
        files["pytorch_model.bin"] = (out / "pytorch_model.bin").read_bytes()
    return files


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Repo contents served by the fake hub (built once: creating models takes a moment)."""
    tmp = tmp_path_factory.mktemp("models")
    old, new = _tiny_bert(tmp, 1), _tiny_bert(tmp, 2)
    vocab = "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"]).encode()
    new_files = {
        **new,
        **TEMPLATES,
        "vocab.txt": vocab,
        "README.md": README,
        "pytorch_model.bin": b"\x80pickle" * 1000,  # must not be fetched: safetensors exist
        "onnx/model.onnx": b"\x00" * 5000,
        "bart_score.pth": b"\x80pth" * 10,
    }
    return {
        "org/tiny-bert": {
            "refs": {"main": SHA_NEW, "v1.0": SHA_OLD},
            SHA_OLD: {**old, "vocab.txt": vocab, **TEMPLATES},
            SHA_NEW: new_files,
        },
        "org/bin-only": {
            "refs": {"main": SHA_BIN},
            SHA_BIN: {**_tiny_bert(tmp, 1, safetensors=False), "README.md": README},
        },
        "gated-model": {"refs": {"main": SHA_GATED}, SHA_GATED: new, "gated_token": TOKEN},
    }


@pytest.fixture
def hub(
    repos: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeHub]:
    """A running fake hub; huggingface_hub's default endpoint points at an empty trap hub."""
    # huggingface_hub reads its env vars at import: patch the parsed constants, not only os.environ.
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no agent-registry fetch
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    with FakeHub(repos) as fake, FakeHub() as trap:
        # Anything that forgets `endpoint=` lands on the trap instead of huggingface.co.
        monkeypatch.setattr(hf_constants, "ENDPOINT", trap.url)
        template = trap.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        yield fake
        assert trap.requests == [], "a request bypassed the explicit endpoint"
        assert fake.unexpected == [], "huggingface_hub used a route the fake hub lacks"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _expected_files(files: dict[str, bytes], names: list[str]) -> dict[str, str]:
    return {name: _sha256(files[name]) for name in sorted(names)}


def _load_layers(path: Path) -> int:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path)
    return len(model.encoder.layer)


def test_fetch_main_resolves_sha_and_loads(hub: FakeHub, repos: dict, tmp_path: Path) -> None:
    dest = tmp_path / "ckpt" / "tiny"
    manifest = fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url)

    files = repos["org/tiny-bert"][SHA_NEW]
    assert manifest["hub_id"] == "org/tiny-bert"
    assert manifest["requested_revision"] == "main"
    assert manifest["resolved_revision"] == SHA_NEW
    assert manifest["endpoint"] == hub.url
    assert manifest["fetched_at"]
    # README, pickle .bin, onnx and .pth are outside the default patterns.
    assert manifest["files"] == _expected_files(files, DEFAULT_FILES)
    on_disk = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert on_disk == sorted([*manifest["files"], MANIFEST_NAME])
    assert json.loads((dest / MANIFEST_NAME).read_text()) == manifest
    assert hub.file_gets("pytorch_model.bin") == 0
    assert hub.file_gets("model.safetensors") == 1
    assert not list(dest.parent.glob(".*partial*"))
    assert _load_layers(dest) == 2


def test_fetch_pinned_revisions_get_older_files(hub: FakeHub, repos: dict, tmp_path: Path) -> None:
    by_sha = fetch_checkpoint("org/tiny-bert", SHA_OLD, tmp_path / "by_sha", endpoint=hub.url)
    by_tag = fetch_checkpoint("org/tiny-bert", "v1.0", tmp_path / "by_tag", endpoint=hub.url)

    old = repos["org/tiny-bert"][SHA_OLD]
    assert by_sha["resolved_revision"] == by_tag["resolved_revision"] == SHA_OLD
    assert by_sha["requested_revision"] == SHA_OLD
    assert by_tag["requested_revision"] == "v1.0"
    assert by_sha["files"] == _expected_files(old, DEFAULT_FILES)
    new_config = repos["org/tiny-bert"][SHA_NEW]["config.json"]
    assert by_sha["files"]["config.json"] != _sha256(new_config)
    assert _load_layers(tmp_path / "by_tag") == 1


def test_bin_only_repo_refused_unless_allowed(hub: FakeHub, repos: dict, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    with pytest.raises(ImhiBenchError) as err:
        fetch_checkpoint("org/bin-only", "main", dest, endpoint=hub.url)
    message = str(err.value)
    for needle in ("org/bin-only", "'main'", SHA_BIN, "safetensors", "pytorch_model.bin"):
        assert needle in message
    assert "weights: bin" in message
    assert not dest.exists()
    assert hub.file_gets("pytorch_model.bin") == 0

    manifest = fetch_checkpoint("org/bin-only", "main", dest, endpoint=hub.url, weights="bin")
    files = repos["org/bin-only"][SHA_BIN]
    assert manifest["files"] == _expected_files(files, ["config.json", "pytorch_model.bin"])
    assert _load_layers(dest) == 1


@pytest.mark.parametrize(
    ("hub_id", "revision", "needles"),
    [
        ("org/no-such-repo", "main", ["org/no-such-repo", "no such repo", "RepositoryNotFound"]),
        (
            "org/tiny-bert",
            "no-such-branch",
            ["org/tiny-bert", "'no-such-branch'", "RevisionNotFound"],
        ),
        ("org/tiny-bert", make_sha("nope"), [make_sha("nope"), "RevisionNotFound"]),
    ],
)
def test_unknown_repo_or_revision(
    hub: FakeHub, tmp_path: Path, hub_id: str, revision: str, needles: list[str]
) -> None:
    with pytest.raises(ImhiBenchError) as err:
        fetch_checkpoint(hub_id, revision, tmp_path / "x", endpoint=hub.url)
    for needle in [*needles, hub.url]:
        assert needle in str(err.value)
    assert not (tmp_path / "x").exists()


def test_connection_refused(hub: FakeHub, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(ImhiBenchError, match="ConnectError") as err:
        fetch_checkpoint("org/tiny-bert", "main", tmp_path / "x", endpoint=endpoint)
    assert endpoint in str(err.value)
    assert "org/tiny-bert" in str(err.value)


def test_bad_arguments(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ImhiBenchError, match="weights"):
        fetch_checkpoint("org/tiny-bert", "main", tmp_path / "x", weights="pickle")
    with pytest.raises(ImhiBenchError, match="revision"):
        fetch_checkpoint("org/tiny-bert", "", tmp_path / "x")
    with pytest.raises(ImhiBenchError, match="a/b/c"):
        fetch_checkpoint("a/b/c", "main", tmp_path / "x", endpoint=hub.url)
    assert hub.requests == []


def test_gated_repo_needs_token(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ImhiBenchError) as err:
        fetch_checkpoint("gated-model", "main", tmp_path / "g", endpoint=hub.url)
    assert "gated-model" in str(err.value) and "HF_TOKEN" in str(err.value)
    assert "GatedRepo" in str(err.value)
    assert not (tmp_path / "g").exists()

    manifest = fetch_checkpoint(
        "gated-model", "main", tmp_path / "g", endpoint=hub.url, token=TOKEN
    )
    assert manifest["resolved_revision"] == SHA_GATED

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    env = fetch_checkpoint("gated-model", "main", tmp_path / "g_env", endpoint=hub.url)
    assert env["files"] == manifest["files"]
    # The token goes to the hub, never to the CDN the weights are redirected to.
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn and all(r.authorization is None for r in cdn)


def test_allow_patterns_and_extra_files(hub: FakeHub, repos: dict, tmp_path: Path) -> None:
    files = repos["org/tiny-bert"][SHA_NEW]
    manifest = fetch_checkpoint(
        "org/tiny-bert",
        "main",
        tmp_path / "extra",
        endpoint=hub.url,
        extra_files=["bart_score.pth", "README.md"],
    )
    assert manifest["files"] == _expected_files(
        files, ["README.md", "bart_score.pth", *DEFAULT_FILES]
    )
    narrow = fetch_checkpoint(
        "org/tiny-bert",
        "main",
        tmp_path / "narrow",
        endpoint=hub.url,
        allow_patterns=["config.json", "*.safetensors", "onnx/*"],
    )
    assert sorted(narrow["files"]) == ["config.json", "model.safetensors", "onnx/model.onnx"]
    assert (tmp_path / "narrow" / "onnx" / "model.onnx").read_bytes() == files["onnx/model.onnx"]
    with pytest.raises(ImhiBenchError, match=r"no_such\.pth"):
        fetch_checkpoint(
            "org/tiny-bert", "main", tmp_path / "y", endpoint=hub.url, extra_files=["no_such.pth"]
        )
    with pytest.raises(ImhiBenchError, match="no weight files"):
        fetch_checkpoint(
            "org/tiny-bert", "main", tmp_path / "y", endpoint=hub.url, allow_patterns=["*.json"]
        )


def test_stale_partial_dir_is_discarded(hub: FakeHub, repos: dict, tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    stale = tmp_path / ".tiny.imhibench-partial"
    stale.mkdir()
    (stale / "junk.bin").write_bytes(b"junk")
    (stale / "model.safetensors").write_bytes(b"truncated")
    manifest = fetch_checkpoint("org/tiny-bert", SHA_OLD, dest, endpoint=hub.url)
    old = repos["org/tiny-bert"][SHA_OLD]
    assert manifest["files"] == _expected_files(old, DEFAULT_FILES)
    assert not (dest / "junk.bin").exists()
    assert not stale.exists()


def test_killed_download_leaves_no_dest_and_resumes(
    hub: FakeHub, repos: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "tiny"
    real_snapshot = checkpoints.snapshot_download

    def spy(*args: Any, **kwargs: Any) -> str:
        assert not dest.exists(), "dest must not appear before the download completes"
        return real_snapshot(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "snapshot_download", spy)
    hub.failing_files.add("model.safetensors")
    with pytest.raises(ImhiBenchError, match="500"):
        fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url)
    partial = tmp_path / ".tiny.imhibench-partial"
    assert not dest.exists()
    assert (partial / "config.json").is_file()
    (partial / "leftover.json").write_text("{}")  # not in the repo: must be pruned

    hub.failing_files.clear()
    manifest = fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url)
    assert hub.file_gets("config.json") == 1  # resumed, not re-downloaded
    files = repos["org/tiny-bert"][SHA_NEW]
    assert manifest["files"] == _expected_files(files, DEFAULT_FILES)
    assert not partial.exists()
    assert not (dest / "leftover.json").exists()


def test_corrupt_download_is_rejected(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt_files.add("model.safetensors")
    with pytest.raises(ImhiBenchError, match="sha256"):
        fetch_checkpoint("org/tiny-bert", "main", tmp_path / "c", endpoint=hub.url)
    assert not (tmp_path / "c").exists()


def test_existing_dest(hub: FakeHub, repos: dict, tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    first = fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url)
    gets = len([r for r in hub.requests if r.method == "GET"])
    again = fetch_checkpoint("org/tiny-bert", SHA_NEW, dest, endpoint=hub.url)
    assert again == first  # same commit and files: reused
    assert len([r for r in hub.requests if r.method == "GET"]) == gets + 1  # model_info only

    older = fetch_checkpoint("org/tiny-bert", "v1.0", dest, endpoint=hub.url)
    assert older["resolved_revision"] == SHA_OLD
    assert json.loads((dest / MANIFEST_NAME).read_text())["resolved_revision"] == SHA_OLD
    assert _load_layers(dest) == 1

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ImhiBenchError, match="not an imhi-bench checkpoint"):
        fetch_checkpoint("org/tiny-bert", "main", foreign, endpoint=hub.url)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_local_checkpoint(repos: dict, tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    files = repos["org/tiny-bert"][SHA_OLD]
    for name in ("config.json", "model.safetensors"):
        (local / name).write_bytes(files[name])
    (local / "sub" / "notes.txt").write_bytes(b"notes")
    manifest = use_local_checkpoint(local)
    assert manifest["files"] == {
        "config.json": _sha256(files["config.json"]),
        "model.safetensors": _sha256(files["model.safetensors"]),
        "sub/notes.txt": _sha256(b"notes"),
    }
    assert manifest["resolved_revision"] is None
    assert manifest["local_path"] == str(local.resolve())
    assert not (local / MANIFEST_NAME).exists()  # nothing written into the user's dir

    with pytest.raises(ImhiBenchError, match="missing-dir"):
        use_local_checkpoint(tmp_path / "missing-dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImhiBenchError, match=r"config\.json"):
        use_local_checkpoint(tmp_path / "empty")


def test_sha256_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "HASH_CHUNK", 7)
    data = bytes(range(256)) * 3
    (tmp_path / "f").write_bytes(data)
    assert checkpoints.sha256_file(tmp_path / "f") == _sha256(data)


def test_sha256_reads_an_unchanged_file_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    opened = []

    def counting_open(*args):
        opened.append(args)
        return open(*args)

    monkeypatch.setattr(hashing, "open", counting_open, raising=False)
    path = tmp_path / "weights.pth"
    path.write_bytes(b"v1")
    assert provenance.sha256_file(path) == provenance.sha256_file(str(path)) == _sha256(b"v1")
    assert len(opened) == 1
    path.write_bytes(b"v2")  # same size: the new mtime tells it apart
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1))
    assert provenance.sha256_file(path) == _sha256(b"v2")
    path.write_bytes(b"v3, longer")
    assert provenance.sha256_file(path) == _sha256(b"v3, longer")
    assert len(opened) == 3


def test_branch_moving_mid_fetch_keeps_resolved_commit(
    hub: FakeHub, repos: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_snapshot = checkpoints.snapshot_download
    moved = {**repos["org/tiny-bert"], "refs": {"main": SHA_OLD}}

    def push_between_resolve_and_download(*args: Any, **kwargs: Any) -> str:
        hub.repos["org/tiny-bert"] = moved  # someone pushes to main right after we resolved it
        return real_snapshot(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "snapshot_download", push_between_resolve_and_download)
    manifest = fetch_checkpoint("org/tiny-bert", "main", tmp_path / "t", endpoint=hub.url)
    assert manifest["resolved_revision"] == SHA_NEW
    new = repos["org/tiny-bert"][SHA_NEW]
    assert manifest["files"] == _expected_files(new, DEFAULT_FILES)


def test_two_fetches_of_one_checkpoint_at_once_take_turns(
    hub: FakeHub, repos: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    dest = tmp_path / "tiny"
    real_snapshot = checkpoints.snapshot_download
    active, most = [0], [0]
    guard = threading.Lock()

    def slow_snapshot(*args: Any, **kwargs: Any) -> str:
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.5)  # long enough for the other job to arrive
        try:
            return real_snapshot(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(checkpoints, "snapshot_download", slow_snapshot)
    results: list[Any] = []

    def job() -> None:
        try:
            results.append(fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url))
        except Exception as err:  # reported by the asserts below
            results.append(err)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert most[0] == 1, "two fetches wrote the same partial directory at once"
    assert len(results) == 2 and results[0] == results[1], results
    expected = _expected_files(repos["org/tiny-bert"][SHA_NEW], DEFAULT_FILES)
    assert results[0]["files"] == expected
    on_disk = checkpoints.file_manifest(dest)
    assert {name: on_disk[name] for name in on_disk if name != MANIFEST_NAME} == expected
    assert _load_layers(dest) == 2


def test_download_cut_short_inside_a_file_restarts_and_is_verified(
    hub: FakeHub, repos: dict, tmp_path: Path
) -> None:
    dest = tmp_path / "tiny"
    hub.failing_files.add("model.safetensors")
    with pytest.raises(ImhiBenchError):
        fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url)
    partial = tmp_path / ".tiny.imhibench-partial"
    weights = repos["org/tiny-bert"][SHA_NEW]["model.safetensors"]
    (partial / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # killed mid-file
    hub.failing_files.clear()
    try:
        manifest = fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url)
    except ImhiBenchError as err:  # a half file that was trusted is caught by its sha256 ...
        assert "differs from the hub's" in str(err)
        manifest = fetch_checkpoint("org/tiny-bert", "main", dest, endpoint=hub.url)  # ... redone
    expected = _expected_files(repos["org/tiny-bert"][SHA_NEW], DEFAULT_FILES)
    assert manifest["files"] == expected
    assert (dest / "model.safetensors").read_bytes() == weights
    assert not partial.exists()
