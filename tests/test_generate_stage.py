"""The generate stage's shards, resume rules, progress lines and stop signals (in process)."""

from __future__ import annotations

import logging
import os
import signal

import pandas as pd
import pytest

from imhibench.errors import ImhiBenchError
from imhibench.generate import GenerationSettings, load_backend
from imhibench.generate.batching import plan_shards
from imhibench.generate.progress import Progress
from imhibench.generate.shards import ShardStore, shard_dir
from imhibench.generate.signals import GenerationStopped, StopOnSignal
from imhibench.generate.stage import run_generate
from imhibench.io import read_provenance, read_table, write_table

ROWS = 14
SETTINGS = {"max_new_tokens": 8, "batch_tokens": 4096, "max_batch_size": 4,
            "chat_template": False, "dtype": "float32", "shard_rows": 4}  # fmt: skip
N_SHARDS = 4  # ceil(14 / 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _queries(n: int, salt: str = "") -> list[str]:
    words = ("sad", "tired", "alone", "work", "sleep", "boss", "family", "money", "school")
    return [
        f'Post: "{salt}{" ".join(words[(3 * i + j) % len(words)] for j in range(i * 5 % 23))}" '
        "Question: Does the poster suffer from stress?"
        for i in range(n)
    ]


@pytest.fixture
def test_set(tmp_path):
    path = tmp_path / "T.parquet"
    ids = [f"T-{i:05d}" for i in range(ROWS)]
    write_table(pd.DataFrame({"row_id": ids, "query": _queries(ROWS), "gold_answer": "x"}), path)
    return path


def _generate(test_set, out, demo_models, settings=SETTINGS, rows=None, **kw) -> pd.DataFrame:
    spec = {"kind": "causal", "split": "instruction"}
    return run_generate(str(test_set), str(out), "tiny", spec, demo_models["causal"], None, None,
                        settings, rows=rows, device="cpu", **kw)  # fmt: skip


@pytest.fixture
def writes(monkeypatch) -> list[int]:
    """Indices of the shards written, in order."""
    written: list[int] = []
    write = ShardStore.write
    monkeypatch.setattr(
        ShardStore, "write", lambda self, k, *a: (written.append(k), write(self, k, *a))[1]
    )
    return written


@pytest.fixture
def keep_shards(monkeypatch):
    """Leave the shard dir behind, as a job killed right after its last shard would."""
    monkeypatch.setattr(ShardStore, "remove", lambda self: None)


def test_plan_shards_longest_first_in_chunks():
    assert plan_shards([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]
    assert plan_shards([], 4) == []
    with pytest.raises(ImhiBenchError, match="shard_rows"):
        plan_shards([1], 0)


def test_sharded_run_equals_one_pass_and_cleans_up(test_set, tmp_path, demo_models, caplog):
    out = tmp_path / "out.parquet"
    with caplog.at_level(logging.INFO, logger="imhibench"):
        table = _generate(test_set, out, demo_models, progress_interval_s=0)
    settings = GenerationSettings(**{k: v for k, v in SETTINGS.items() if k != "shard_rows"})
    backend = load_backend("causal", model_dir=demo_models["causal"], settings=settings,
                           device="cpu")  # fmt: skip
    whole = backend.generate(_queries(ROWS))
    assert table["row_id"].tolist() == [f"T-{i:05d}" for i in range(ROWS)]
    assert table["response"].tolist() == whole.texts
    assert table["n_output_tokens"].tolist() == whole.n_output_tokens
    pd.testing.assert_frame_equal(read_table(out), table)
    assert not shard_dir(out).exists()
    provenance = read_provenance(out)
    assert provenance["shard_rows"] == 4 and provenance["resumed_rows"] == 0
    assert provenance["generation_settings"] == SETTINGS
    assert caplog.text.count("saved shard-") == N_SHARDS
    assert "14/14 rows (100.0%)" in caplog.text and "output tokens/s" in caplog.text
    assert "rows/s" in caplog.text and "left" in caplog.text


def test_restart_keeps_saved_shards(test_set, tmp_path, demo_models, writes, keep_shards, caplog):
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    out.unlink()  # as if killed after the last shard, before the output
    (shard_dir(out) / "shard-00002.parquet").unlink()  # ... or while shard 2 was in flight
    (shard_dir(out) / ".shard-00002.parquet.tmp-1").write_text("partial")
    writes.clear()
    with caplog.at_level(logging.INFO, logger="imhibench"):
        again = _generate(test_set, out, demo_models)
    assert writes == [2]
    assert f"resuming: 3 of {N_SHARDS} shards (10 of 14 rows)" in caplog.text
    pd.testing.assert_frame_equal(again, first)
    assert read_provenance(out)["resumed_rows"] == 10
    assert not list(shard_dir(out).glob(".*tmp*"))


def test_broken_shards_are_recomputed(test_set, tmp_path, demo_models, writes, keep_shards, caplog):
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    (shard_dir(out) / "shard-00001.parquet").write_text("not parquet")
    moved = read_table(shard_dir(out) / "shard-00003.parquet")
    write_table(moved, shard_dir(out) / "shard-00000.parquet")  # other rows than planned
    write_table(moved, shard_dir(out) / "shard-00009.parquet")  # beyond the plan
    writes.clear()
    with caplog.at_level(logging.WARNING, logger="imhibench"):
        again = _generate(test_set, out, demo_models)
    assert writes == [0, 1]
    assert "shard-00001.parquet: discarding shard (" in caplog.text
    assert "shard-00000.parquet: discarding shard (rows differ from the plan)" in caplog.text
    assert "shard-00009.parquet: discarding shard (not a shard of this plan)" in caplog.text
    pd.testing.assert_frame_equal(again, first)


@pytest.mark.parametrize(
    ("change", "changed", "n_shards"),
    [
        ({"settings": {**SETTINGS, "max_new_tokens": 6}}, "settings", 4),
        ({"settings": {**SETTINGS, "shard_rows": 5}}, "plan_sha256, settings, shard_rows", 3),
        ({"rows": 12}, "plan_sha256, rows", 3),
        ({"seed": 3}, "seed", 4),
        ({"edit_test_set": True}, "test_set_sha256", 4),  # same lengths: same plan
    ],
)
def test_stale_shards_are_discarded(
    test_set, tmp_path, demo_models, writes, keep_shards, caplog, change, changed, n_shards
):
    out = tmp_path / "out.parquet"
    _generate(test_set, out, demo_models)
    if change.pop("edit_test_set", False):
        table = read_table(test_set)
        table["query"] = _queries(ROWS, salt="edited ")
        write_table(table, test_set)
    writes.clear()
    with caplog.at_level(logging.INFO, logger="imhibench"):
        _generate(test_set, out, demo_models, **change)
    assert f"discarding {N_SHARDS} stale shard(s) written for other inputs" in caplog.text
    assert f"(changed: {changed})" in caplog.text
    assert "resuming" not in caplog.text
    assert writes == list(range(n_shards))


def test_bad_shard_settings(test_set, tmp_path, demo_models):
    with pytest.raises(ImhiBenchError, match="shard_rows must be an integer >= 1"):
        _generate(test_set, tmp_path / "o.parquet", demo_models, {**SETTINGS, "shard_rows": 0})
    with pytest.raises(ImhiBenchError, match="generation settings .*top_k"):
        _generate(test_set, tmp_path / "o.parquet", demo_models, {**SETTINGS, "top_k": 5})
    assert not (tmp_path / "o.parquet").exists()


def test_rows_subset_and_default_shard_size(test_set, tmp_path, demo_models, writes):
    settings = {k: v for k, v in SETTINGS.items() if k != "shard_rows"}
    table = _generate(test_set, tmp_path / "o.parquet", demo_models, settings, rows=5)
    assert table["row_id"].tolist() == [f"T-{i:05d}" for i in range(5)]
    assert writes == [0]
    assert read_provenance(tmp_path / "o.parquet")["shard_rows"] == 256


def test_progress_line():
    now = [0.0]
    progress = Progress("m", total=100, done=20, interval_s=10, clock=lambda: now[0])
    now[0] = 5.0
    progress.batch(10, 500)
    assert progress.last == 0.0  # not logged yet
    now[0] = 12.0
    progress.batch(10, 500)
    assert progress.last == 12.0
    assert progress.line() == (
        "m: 40/100 rows (40.0%), 1.67 rows/s, 83.3 output tokens/s, about 0:00:36 left"
    )
    assert "unknown" in Progress("m", total=3).line()


def test_stop_signal_raises_or_waits_for_a_write():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(GenerationStopped) as stopped, StopOnSignal():
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("no stop")
    assert stopped.value.code == 128 + signal.SIGTERM and stopped.value.signal_name == "SIGTERM"
    finished = []
    with pytest.raises(GenerationStopped), StopOnSignal() as stop, stop.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        finished.append(True)  # the block runs to its end first
    assert finished == [True]
    assert signal.getsignal(signal.SIGTERM) is previous
