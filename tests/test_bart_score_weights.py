"""The BARTScore ParaBank2 weights file: fetched from a local path, a loopback URL or (up to
gdown's boundary) Google Drive, sha256-checked, recorded, loaded, and named in provenance."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support import REPO, serve_directory

from imhibench.common.errors import ImhiBenchError
from imhibench.common.provenance import sha256_file
from imhibench.config.plan import Plan
from imhibench.fetch.scorer_weights import (
    PARABANK2_GDRIVE_ID,
    fetch_weights_file,
    lock_path,
    locked_sha256,
    record_path,
    weights_path,
    weights_record,
)
from imhibench.score.metrics import compute_explanation_metrics
from imhibench.score.metrics.bart_variant import variant_name
from imhibench.score.metrics.bartscore import BARTScorer
from imhibench.score.stage import bart_score_provenance

SRCS = ["Yes, the poster suffers from depression.", "No stress here, a game.", "hopeless"]
TGTS = ["Yes, the poster suffers from depression. Reasoning: sad.", "No.", "Yes, it is work."]


@pytest.fixture(scope="module")
def weights(demo_models) -> tuple[Path, str]:
    """The demo's tiny stand-in for bart_score.pth and its sha256."""
    path = Path(demo_models["bart-score-weights"])
    return path, sha256_file(path)


def _expected_scores(checkpoint: str, weights_path: Path) -> list[float]:
    """Scores of the plain checkpoint with the state_dict loaded by hand."""
    scorer = BARTScorer(checkpoint)
    scorer.model.load_state_dict(torch.load(weights_path, weights_only=True))
    return scorer.score(SRCS, TGTS)


def test_local_path_is_copied_checked_recorded_and_loaded(demo_models, weights, tmp_path):
    source, sha = weights
    dest = tmp_path / "resources" / "scorers" / "bart_score.pth"
    record = fetch_weights_file({"local_path": str(source), "sha256": sha}, dest)
    assert sha256_file(dest) == sha
    assert record["sha256"] == sha and record["sha256_pinned"] is True
    assert json.loads(record_path(dest).read_text())["source"] == {"local_path": str(source)}
    settings = {"bart_score": {"checkpoint": demo_models["bart-score"], "weights_file": str(dest)}}
    columns, _ = compute_explanation_metrics(SRCS, TGTS, settings)
    plain = BARTScorer(demo_models["bart-score"]).score(SRCS, TGTS)
    assert columns["bart_score"] == pytest.approx(
        _expected_scores(demo_models["bart-score"], source), abs=1e-5
    )
    assert columns["bart_score"] != pytest.approx(plain, abs=1e-3)  # the weights are used


def test_loopback_url_is_downloaded_and_checked(weights, tmp_path):
    source, sha = weights
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(source, served / "bart_score.pth")
    dest = tmp_path / "out" / "bart_score.pth"
    with serve_directory(served) as base:
        url = f"{base}/bart_score.pth"
        record = fetch_weights_file({"url": url, "sha256": sha}, dest)
        assert record["source"] == {"url": url} and sha256_file(dest) == sha
        wrong = tmp_path / "wrong" / "bart_score.pth"
        with pytest.raises(ImhiBenchError, match="sha256 mismatch.*BARTScore weights file"):
            fetch_weights_file({"url": url, "sha256": "0" * 64}, wrong)
    assert not wrong.exists() and not record_path(wrong).exists()


def test_unpinned_file_warns_and_records_its_digest(weights, tmp_path, caplog):
    source, sha = weights
    dest = tmp_path / "bart_score.pth"
    with caplog.at_level(logging.WARNING):
        record = fetch_weights_file({"local_path": str(source), "sha256": None}, dest)
    assert record["sha256"] == sha and record["sha256_pinned"] is False
    assert f"no sha256 is pinned in the config; got {sha}" in caplog.text


def test_first_fetch_writes_the_lock_and_later_fetches_must_match_it(weights, tmp_path):
    source, sha = weights
    local = tmp_path / "weights.pth"
    shutil.copy(source, local)
    dest = tmp_path / "scorers" / "bart_score.pth"
    spec = {"local_path": str(local), "sha256": None}
    record = fetch_weights_file(spec, dest)
    lock = json.loads(lock_path(dest).read_text())
    assert lock["sha256"] == sha == locked_sha256(dest) and lock["source"] == {
        "local_path": str(local)
    }
    assert record["sha256_lock"] == str(lock_path(dest)) and not record["sha256_locked_before"]
    assert weights_record(dest)["sha256_locked"] is True
    locked_bytes = lock_path(dest).read_bytes()
    dest.unlink()  # a refetch (Snakemake deletes the outputs first; the lock is none of them)
    again = fetch_weights_file(spec, dest)
    assert again["sha256"] == sha and again["sha256_locked_before"]
    assert lock_path(dest).read_bytes() == locked_bytes  # written once, by the first fetch
    local.write_bytes(b"another file at the same source")
    dest.unlink()
    other = sha256_file(local)
    with pytest.raises(ImhiBenchError, match="sha256 mismatch") as err:
        fetch_weights_file(spec, dest)
    for named in (str(lock_path(dest)), sha, other):
        assert named in str(err.value)
    assert not dest.exists() and lock_path(dest).read_bytes() == locked_bytes


def test_a_pin_that_differs_from_the_lock_is_refused_before_fetching(weights, tmp_path):
    source, sha = weights
    dest = tmp_path / "bart_score.pth"
    fetch_weights_file({"local_path": str(source), "sha256": None}, dest)
    dest.unlink()
    with pytest.raises(ImhiBenchError, match=f"pins {'a' * 64}, but .*lock.json records {sha}"):
        fetch_weights_file({"local_path": str(source), "sha256": "a" * 64}, dest)
    assert not dest.exists()
    pinned = fetch_weights_file({"local_path": str(source), "sha256": sha}, dest)  # the same
    assert pinned["sha256_pinned"] and pinned["sha256"] == sha


def test_a_weights_file_replaced_after_its_fetch_is_refused(weights, tmp_path):
    source, sha = weights
    dest = tmp_path / "bart_score.pth"
    fetch_weights_file({"local_path": str(source), "sha256": None}, dest)
    dest.write_bytes(b"swapped by hand")
    with pytest.raises(
        ImhiBenchError, match=f"bart_score.pth: sha256 [0-9a-f]{{64}}, but .* {sha}"
    ):
        weights_record(dest)
    lock_path(dest).write_text("{}")
    with pytest.raises(ImhiBenchError, match="not a BARTScore weights lock file"):
        weights_record(dest)


def test_missing_local_file_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ImhiBenchError, match="nope.pth does not exist"):
        fetch_weights_file({"local_path": str(missing), "sha256": None}, tmp_path / "w.pth")


def test_gdrive_source_calls_gdown_with_the_file_id(weights, tmp_path, monkeypatch):
    """Up to gdown's boundary: the network download itself was not run here."""
    import gdown

    source, sha = weights
    calls = []

    def fake_download(*, id, output, quiet):  # gdown.download's keyword API
        calls.append(id)
        shutil.copy(source, output)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    dest = tmp_path / "bart_score.pth"
    record = fetch_weights_file({"gdrive_id": PARABANK2_GDRIVE_ID, "sha256": sha}, dest)
    assert calls == [PARABANK2_GDRIVE_ID]
    assert record["source"] == {"gdrive_id": PARABANK2_GDRIVE_ID} and sha256_file(dest) == sha
    other = tmp_path / "other" / "bart_score.pth"
    with pytest.raises(ImhiBenchError, match="sha256 mismatch for Google Drive file"):
        fetch_weights_file({"gdrive_id": PARABANK2_GDRIVE_ID, "sha256": "f" * 64}, other)
    assert not other.exists() and not lock_path(other).exists()
    monkeypatch.setattr(gdown, "download", lambda **kwargs: None)
    with pytest.raises(ImhiBenchError, match="gdown could not download"):
        fetch_weights_file({"gdrive_id": "abc", "sha256": None}, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


def test_tied_weights_may_be_listed_once_but_nothing_else_may_be_missing(demo_models, weights):
    source, _ = weights
    state = torch.load(source, weights_only=True)
    tied = (
        "lm_head.weight",
        "model.encoder.embed_tokens.weight",
        "model.decoder.embed_tokens.weight",
    )
    once = {k: v for k, v in state.items() if k not in tied}
    folder = Path(source).parent
    torch.save(once, folder / "tied-once.pth")
    loaded = BARTScorer(demo_models["bart-score"], weights_file=str(folder / "tied-once.pth"))
    assert loaded.score(SRCS, TGTS) == pytest.approx(
        _expected_scores(demo_models["bart-score"], source), abs=1e-5
    )
    torch.save({k: v for k, v in state.items() if "layers.0.fc1" not in k}, folder / "gap.pth")
    with pytest.raises(ImhiBenchError, match="does not fit.*layers.0.fc1"):
        BARTScorer(demo_models["bart-score"], weights_file=str(folder / "gap.pth"))
    torch.save({**state, "extra.weight": torch.zeros(1)}, folder / "extra.pth")
    with pytest.raises(ImhiBenchError, match="unexpected.*extra.weight"):
        BARTScorer(demo_models["bart-score"], weights_file=str(folder / "extra.pth"))


def test_pickled_objects_are_refused(demo_models, tmp_path):
    """weights_only=True: a file that needs arbitrary unpickling is not loaded."""
    evil = tmp_path / "evil.pth"
    torch.save({"model.shared.weight": Path("/")}, evil)
    with pytest.raises(ImhiBenchError, match="cannot load weights_file"):
        BARTScorer(demo_models["bart-score"], weights_file=str(evil))


def test_scoring_is_float32_unless_bfloat16_is_asked(demo_models):
    assert BARTScorer(demo_models["bart-score"]).model.dtype == torch.float32
    half = BARTScorer(demo_models["bart-score"], dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    full = BARTScorer(demo_models["bart-score"]).score(SRCS, TGTS)
    assert half.score(SRCS, TGTS) != pytest.approx(full, abs=1e-6)


def test_provenance_records_what_was_loaded_and_claims_no_variant(weights, tmp_path):
    """The score stage records the weights file it loaded (source, sha256); it names no
    variant: the aggregate does, from that digest (a file is ParaBank2's only by its digest)."""
    source, sha = weights
    dest = tmp_path / "bart_score.pth"
    fetch_weights_file({"gdrive_id": None, "local_path": str(source), "sha256": sha}, dest)
    with_weights = bart_score_provenance({"checkpoint": "x", "weights_file": str(dest)})
    assert with_weights == {"bart_score_weights": weights_record(dest)}
    assert with_weights["bart_score_weights"]["sha256"] == sha
    assert bart_score_provenance({"checkpoint": "x", "weights_file": None}) == {
        "bart_score_weights": None
    }


# --- through Snakemake: the demo and the paper config side by side ------------------------


def _snakemake(workdir: Path, *args: str, configs=(), env=None) -> subprocess.CompletedProcess:
    """`snakemake` in ``workdir`` on the paper config, ``configs`` on top (later files win)."""
    files = ["--configfile", *map(str, configs)] if configs else []
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "1", *args, *files,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def _fake_gdown(tmp_path: Path, content: bytes) -> dict:
    """An environment whose ``gdown.download(id=, output=, quiet=)`` (its keyword API) writes
    ``content`` for the ParaBank2 file id: Google Drive is out of reach here."""
    package = tmp_path / "fake_gdown" / "gdown"
    package.mkdir(parents=True)
    (tmp_path / "parabank2.pth").write_bytes(content)
    (package / "__init__.py").write_text(
        "import shutil\n\n\n"
        "def download(*, id, output, quiet):\n"
        f"    assert id == {PARABANK2_GDRIVE_ID!r}, id\n"
        f"    shutil.copy({str(tmp_path / 'parabank2.pth')!r}, output)\n"
        "    return output\n"
    )
    path = os.pathsep.join(filter(None, [str(package.parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_the_demo_never_touches_the_papers_weights_nor_plans_their_refetch(demo_models, tmp_path):
    workdir, demo = tmp_path / "work", REPO / "workflow_config" / "demo.yaml"
    env = _fake_gdown(tmp_path, b"ParaBank2 weights, as Google Drive would send them")
    paper = yaml.safe_load((REPO / "workflow_config" / "config.yaml").read_text())
    paper_file = workdir / Plan(paper).bart_score_weights_path()
    fetched = _snakemake(workdir, str(paper_file.relative_to(workdir)), env=env)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    paper_sha = sha256_file(paper_file)
    assert locked_sha256(paper_file) == paper_sha  # the first fetch wrote the lock
    before = paper_file.stat().st_mtime_ns, paper_file.read_bytes()

    # The demo, with its models built (copied from the session's build), fetches its own file.
    shutil.copytree(
        Path(demo_models["bart-score-weights"]).parent, workdir / "resources" / "demo_models"
    )
    demo_spec = yaml.safe_load(demo.read_text())["scorers"]["bart_score"]["weights_file"]
    demo_file = workdir / weights_path(demo_spec)
    assert demo_file.parent != paper_file.parent
    ran = _snakemake(workdir, str(demo_file.relative_to(workdir)), configs=[demo], env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert sha256_file(demo_file) == sha256_file(demo_models["bart-score-weights"])
    assert (paper_file.stat().st_mtime_ns, paper_file.read_bytes()) == before

    def plans_fetch(*configs: Path, target: tuple[str, ...] = ()) -> bool:
        dry = _snakemake(workdir, "--dry-run", *target, configs=configs, env=env)
        assert dry.returncode == 0, dry.stderr[-3000:]
        return "fetch_bart_score_weights" in dry.stdout + dry.stderr

    assert not plans_fetch()  # the paper's dry run after the demo: no refetch
    assert not plans_fetch(demo, target=(str(demo_file.relative_to(workdir)),))  # and back
    pin = tmp_path / "pin.yaml"
    pin.write_text(
        yaml.safe_dump({"scorers": {"bart_score": {"weights_file": {"sha256": paper_sha}}}})
    )
    assert not plans_fetch(pin)  # pinning the recorded digest refetches nothing
    pin.write_text(
        yaml.safe_dump({"scorers": {"bart_score": {"weights_file": {"sha256": "b" * 64}}}})
    )
    refused = _snakemake(workdir, "--dry-run", configs=[pin], env=env)
    message = refused.stdout + refused.stderr
    assert refused.returncode != 0 and f"pins {'b' * 64}, but" in message and paper_sha in message


def test_variant_says_parabank2_only_for_the_recorded_parabank2_digest():
    other, known = "ab" * 32, "cd" * 32
    assert variant_name("facebook/bart-large-cnn", known, known) == (
        "bart-large-cnn + ParaBank2 weights"
    )
    for recorded in (None, known):  # no digest recorded, or another one
        assert variant_name("facebook/bart-large-cnn", other, recorded) == (
            "bart-large-cnn + unidentified weights file abababababab"
        )
    assert variant_name("/models/bart-large-cnn/", None, known) == (
        "bart-large-cnn, no ParaBank2 weights"
    )
