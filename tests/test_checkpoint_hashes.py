"""A local checkpoint (`path:`) is recorded with the sha256 of its files, hashed once."""

from __future__ import annotations

import hashlib

import pytest

from imhibench.common import checkpoint_hashes
from imhibench.common.checkpoint_hashes import local_checkpoint_sha256
from imhibench.common.provenance import checkpoint_provenance


@pytest.fixture
def checkpoint(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"weights v1")
    (directory / "tokenizer.json").write_text('{"vocab": 1}')
    (directory / "notes.md").write_text("not part of the checkpoint")
    return directory


@pytest.fixture
def count_hashes(monkeypatch):
    calls = []
    real = checkpoint_hashes.sha256_file

    def counting(path):
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(checkpoint_hashes, "sha256_file", counting)
    return calls


def test_provenance_of_a_local_checkpoint_names_its_files_digests(checkpoint, monkeypatch):
    monkeypatch.chdir(checkpoint.parent)
    record = checkpoint_provenance(checkpoint)
    assert record["local_path"] == str(checkpoint.resolve())
    assert record["files_sha256"] == {
        "model.safetensors": hashlib.sha256(b"weights v1").hexdigest(),
        "tokenizer.json": hashlib.sha256(b'{"vocab": 1}').hexdigest(),
    }


def test_other_weights_at_the_same_path_are_told_apart(checkpoint, monkeypatch):
    monkeypatch.chdir(checkpoint.parent)
    before = checkpoint_provenance(checkpoint)
    (checkpoint / "model.safetensors").write_bytes(b"weights v2, other size")
    assert checkpoint_provenance(checkpoint) != before


def test_rerun_reuses_cached_digests_and_rehashes_only_changed_files(
    checkpoint, tmp_path, count_hashes
):
    cache = tmp_path / "cache"
    first = local_checkpoint_sha256(checkpoint, cache)
    assert sorted(count_hashes) == ["model.safetensors", "tokenizer.json"]
    count_hashes.clear()
    assert local_checkpoint_sha256(checkpoint, cache) == first
    assert count_hashes == []
    (checkpoint / "tokenizer.json").write_text('{"vocab": 2}')
    changed = local_checkpoint_sha256(checkpoint, cache)
    assert count_hashes == ["tokenizer.json"]
    assert changed["tokenizer.json"] != first["tokenizer.json"]


def test_unwritable_or_corrupt_cache_only_costs_a_rehash(checkpoint, tmp_path, count_hashes):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = blocker / "cache"  # a directory cannot be made inside a file
    expected = local_checkpoint_sha256(checkpoint, tmp_path / "ok")
    assert local_checkpoint_sha256(checkpoint, unwritable) == expected
    for cache_file in (tmp_path / "ok").iterdir():
        cache_file.write_text("{not json")
    count_hashes.clear()
    assert local_checkpoint_sha256(checkpoint, tmp_path / "ok") == expected
    assert len(count_hashes) == 2


def test_the_chat_template_file_is_part_of_the_checkpoint_digest(checkpoint, tmp_path):
    """transformers saves the chat template as chat_template.jinja: editing it changes what
    `chat_template: true` feeds the model, so it must change the digest (the resume key)."""
    (checkpoint / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    before = local_checkpoint_sha256(checkpoint, cache_dir=tmp_path / "cache")
    assert "chat_template.jinja" in before
    (checkpoint / "chat_template.jinja").write_text("[INST] {{ messages[0]['content'] }}")
    assert local_checkpoint_sha256(checkpoint, cache_dir=tmp_path / "cache") != before
