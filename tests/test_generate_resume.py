"""A real generation subprocess killed mid-run (SIGKILL, SIGTERM) resumes from its shards."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from support import REPO

from imhibench.generate.shards import ShardStore, shard_dir
from imhibench.generate.stage import run_generate
from imhibench.io import read_table, write_table

ROWS, SHARD_ROWS = 400, 8
N_SHARDS = ROWS // SHARD_ROWS
SETTINGS = {"max_new_tokens": 24, "batch_tokens": 4096, "max_batch_size": 8,
            "chat_template": False, "dtype": "float32", "shard_rows": SHARD_ROWS}  # fmt: skip
# The job a Snakemake script would run, with torch pinned to one thread like the reference run.
WORKER = """
import json, sys
import torch
torch.set_num_threads(1)
from imhibench.generate.stage import run_generate
from imhibench.logs import configure_job
configure_job(None)
run_generate(**json.loads(sys.argv[1]))
"""
SAVED = re.compile(r"saved (shard-\d+\.parquet)")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> Path:
    """Synthetic queries of varied lengths (no IMHI mirror needed)."""
    words = ("I", "feel", "sad", "alone", "work", "sleep", "boss", "family", "money", "help")
    queries = [
        f'Consider this post: "{" ".join(words[(i * 7 + j) % len(words)] for j in range(i % 50))}"'
        " Question: Does the poster suffer from depression?"
        for i in range(ROWS)
    ]
    table = pd.DataFrame(
        {"row_id": [f"T-{i:05d}" for i in range(ROWS)], "query": queries, "gold_answer": "x"}
    )
    path = tmp_path_factory.mktemp("resume") / "T.parquet"
    write_table(table, path)
    return path


def _args(test_set: Path, out: Path, model_dir: str) -> dict:
    return {
        "test_set_path": str(test_set), "out_path": str(out), "model": "tiny",
        "model_spec": {"kind": "causal", "split": "instruction"}, "model_dir": model_dir,
        "base_model_dir": None, "responses_path": None, "settings": SETTINGS, "rows": None,
        "device": "cpu", "seed": 0,
    }  # fmt: skip


@pytest.fixture(scope="module")
def reference(test_set, demo_models, tmp_path_factory) -> pd.DataFrame:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "T.parquet"
    return run_generate(**_args(test_set, out, demo_models["causal"]))


def _worker(args: dict, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(args)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


def _interrupt(args: dict, sig: int, log: Path) -> tuple[int, dict[str, int], float]:
    """Run a worker, send ``sig`` once it saved a shard; (exit status, shards, seconds to exit)."""
    out, shards = Path(args["out_path"]), shard_dir(args["out_path"])
    proc = _worker(args, log)
    deadline = time.monotonic() + 120
    try:
        while not list(shards.glob("shard-*.parquet")):
            assert proc.poll() is None, f"worker ended before saving a shard:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no shard after 120 s"
            assert not out.exists()
            time.sleep(0.002)
        proc.send_signal(sig)
        sent = time.monotonic()
        status = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists(), f"the output appeared although the job was stopped:\n{log.read_text()}"
    saved = {f.name: f.stat().st_mtime_ns for f in shards.glob("shard-*.parquet")}
    assert 1 <= len(saved) < N_SHARDS, "the stop did not land mid-run"
    assert set(SAVED.findall(log.read_text())) <= set(saved)
    return status, saved, time.monotonic() - sent


def test_sigkill_then_restart_loses_nothing(test_set, demo_models, reference, tmp_path):
    args = _args(test_set, tmp_path / "T.parquet", demo_models["causal"])
    status, saved, _ = _interrupt(args, signal.SIGKILL, tmp_path / "run1.log")
    assert status == -signal.SIGKILL

    restart = _worker(args, tmp_path / "run2.log")
    assert restart.wait(timeout=120) == 0, (tmp_path / "run2.log").read_text()
    log = (tmp_path / "run2.log").read_text()
    assert f"resuming: {len(saved)} of {N_SHARDS} shards" in log
    rewritten = SAVED.findall(log)
    # Only the shards missing at the kill were generated again: at most the one in flight was
    # recomputed, and every saved shard was kept.
    assert len(rewritten) == len(set(rewritten)) == N_SHARDS - len(saved)
    assert not set(rewritten) & set(saved)
    pd.testing.assert_frame_equal(read_table(args["out_path"]), reference)
    assert not shard_dir(args["out_path"]).exists()


def test_sigterm_exits_cleanly_and_resumes(
    test_set, demo_models, reference, tmp_path, monkeypatch, caplog
):
    args = _args(test_set, tmp_path / "T.parquet", demo_models["causal"])
    status, saved, seconds = _interrupt(args, signal.SIGTERM, tmp_path / "run1.log")
    assert status == 128 + signal.SIGTERM
    assert seconds < 10
    assert re.search(
        r"stopped by SIGTERM; \d+ of 400 rows saved", (tmp_path / "run1.log").read_text()
    )
    shards = shard_dir(args["out_path"])
    assert sorted(p.name for p in shards.iterdir()) == sorted([*saved, "manifest.json"])
    assert not list(tmp_path.glob(".*tmp*"))  # no partial file anywhere

    writes: list[int] = []
    write = ShardStore.write
    monkeypatch.setattr(
        ShardStore, "write", lambda self, k, *a: (writes.append(k), write(self, k, *a))[1]
    )
    with caplog.at_level(logging.INFO, logger="imhibench"):
        table = run_generate(**args)
    assert f"resuming: {len(saved)} of {N_SHARDS} shards" in caplog.text
    assert sorted(writes) == [k for k in range(N_SHARDS) if f"shard-{k:05d}.parquet" not in saved]
    pd.testing.assert_frame_equal(table, reference)
    pd.testing.assert_frame_equal(read_table(args["out_path"]), reference)
    assert not shards.exists()
