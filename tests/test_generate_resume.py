"""A real generation subprocess killed mid-run (SIGKILL, SIGTERM) resumes from its shards."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from support import REPO

from imhibench.common.io import read_provenance, read_table, write_table
from imhibench.generate.shards import ShardStore, shard_dir
from imhibench.generate.stage import run_generate

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
from imhibench.common.logs import configure_job
configure_job(None)
run_generate(**json.loads(sys.argv[1]))
"""
SAVED = re.compile(r"saved (shard-[0-9a-f]+\.parquet)")
# The same job, with the final output write slowed down (a marker file says it has begun).
SLOW_FINAL_WRITE = """
import pathlib, time
import imhibench.generate.stage as stage
write_table = stage.write_table
def slow_write(table, path, provenance=None):
    pathlib.Path(f"{path}.writing").touch()
    time.sleep(3)
    write_table(table, path, provenance)
stage.write_table = slow_write
"""
# The same job, its final output write held (and its lock with it) until a file releases it:
# on a loaded machine the job could otherwise finish before a second process is started.
HELD_FINAL_WRITE = """
import pathlib, time
import imhibench.generate.stage as stage
write_table = stage.write_table
def held_write(table, path, provenance=None):
    deadline = time.monotonic() + 300
    while not pathlib.Path(f"{path}.release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    write_table(table, path, provenance)
stage.write_table = held_write
"""


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


def _worker(args: dict, log: Path, patch: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", patch + WORKER, json.dumps(args)],
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
    assert f"resuming: {len(saved) * SHARD_ROWS} of {ROWS} rows already saved" in log
    # Only the rows missing at the kill were generated again (at most the shard in flight was
    # recomputed), and every saved shard was kept.
    assert read_provenance(args["out_path"])["generated_rows"] == ROWS - len(saved) * SHARD_ROWS
    assert set(saved) <= {p.name for p in shard_dir(args["out_path"]).iterdir()}
    pd.testing.assert_frame_equal(read_table(args["out_path"]), reference)


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

    saved_rows = {r for name in saved for r in read_table(shards / name)["row_id"]}
    writes: list[str] = []
    write = ShardStore.write
    monkeypatch.setattr(
        ShardStore, "write", lambda self, t, *a: (writes.extend(t["row_id"]), write(self, t, *a))[1]
    )
    with caplog.at_level(logging.INFO, logger="imhibench"):
        table = run_generate(**args)
    assert f"resuming: {len(saved_rows)} of {ROWS} rows already saved" in caplog.text
    assert sorted(writes) == sorted(set(reference["row_id"]) - saved_rows)
    pd.testing.assert_frame_equal(table, reference)
    pd.testing.assert_frame_equal(read_table(args["out_path"]), reference)


def test_sigterm_during_the_final_write_loses_no_row(
    test_set, demo_models, reference, tmp_path, monkeypatch, caplog
):
    """The output is written, the job exits 143, Snakemake deletes the "failed" output: the
    shards are still there and the rerun rebuilds the output without generating a row."""
    args = {**_args(test_set, tmp_path / "T.parquet", demo_models["causal"]), "rows": 40}
    out, log = Path(args["out_path"]), tmp_path / "run1.log"
    proc = _worker(args, log, patch=SLOW_FINAL_WRITE)
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{out}.writing").exists():
            assert proc.poll() is None, f"worker ended early:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no final write after 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert status == 128 + signal.SIGTERM, log.read_text()
    assert out.is_file()  # the write finished before the signal took effect
    out.unlink()  # what Snakemake does with the output of a failed job
    monkeypatch.setattr("imhibench.generate.load_backend", lambda *a, **k: pytest.fail("loaded"))
    with caplog.at_level(logging.INFO, logger="imhibench"):
        table = run_generate(**args)
    assert "every row is saved" in caplog.text
    assert read_provenance(out)["generated_rows"] == 0
    pd.testing.assert_frame_equal(table, reference.head(40))


def test_a_second_job_on_the_same_output_stops_at_once(test_set, demo_models, reference, tmp_path):
    """Issue 18 item 5: two real processes on one output (an orphan of a killed snakemake and
    its rerun): the second stops within seconds naming the first, which finishes undisturbed."""
    args = _args(test_set, tmp_path / "T.parquet", demo_models["causal"])
    first = _worker(args, tmp_path / "run1.log", patch=HELD_FINAL_WRITE)
    try:
        deadline = time.monotonic() + 120
        while not list(shard_dir(args["out_path"]).glob("shard-*.parquet")):
            assert first.poll() is None, (tmp_path / "run1.log").read_text()
            assert time.monotonic() < deadline, "no shard after 120 s"
            time.sleep(0.01)
        started = time.monotonic()
        second = _worker(args, tmp_path / "run2.log")
        assert second.wait(timeout=60) == 1
        seconds = time.monotonic() - started
        assert first.poll() is None  # still running: the second stopped before it ended
        Path(f"{args['out_path']}.release").touch()  # the first may write its output now
        assert first.wait(timeout=300) == 0, (tmp_path / "run1.log").read_text()
    finally:
        first.kill()
        first.wait()
    error = (tmp_path / "run2.log").read_text()
    assert f"another job is writing this output: pid {first.pid} on host {platform.node()}" in error
    assert "pgrep -af .snakemake/scripts" in error
    assert seconds < 30, f"the second job took {seconds:.0f} s to stop"  # incl. importing torch
    assert "generating" not in error and not (tmp_path / "run1.log").read_text().count("WARNING")
    pd.testing.assert_frame_equal(read_table(args["out_path"]), reference)
