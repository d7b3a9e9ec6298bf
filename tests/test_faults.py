"""Fault injection: killed jobs, broken shards and full disks never leave output that a rerun
would accept, and a rerun gives the same result as an undisturbed run."""
# ruff: noqa: F811  (the generate-stage fixtures are imported by name)

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from support import REPO
from test_generate_stage import _generate, test_set, writes  # noqa: F401

from imhibench.common import io
from imhibench.common.io import read_table, write_table
from imhibench.generate.shards import shard_dir
from imhibench.label import run_label
from imhibench.score.stage import run_score

YES = "Yes, the poster suffers from depression. Reasoning: the gold explanation."
NO = "No, the poster does not suffer from depression. Reasoning: nothing."
N_ROWS = 40


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if ".tmp" in p.name)


@pytest.fixture
def stage_inputs(tmp_path):
    """A DR test set and responses (rule labeler, ROUGE and BLEU: no model needed)."""
    ids = [f"DR-{n:05d}" for n in range(N_ROWS)]
    golds = [YES if n % 3 else NO for n in range(N_ROWS)]
    tests_table = pd.DataFrame(
        {
            "row_id": ids,
            "query": [f"post {n}" for n in range(N_ROWS)],
            "gold_answer": golds,
            "gold_label": ["yes" if g is YES else "no" for g in golds],
            "gold_explanation": "x",
        }
    )
    responses = pd.DataFrame(
        {
            "row_id": ids,
            "response": [(YES if n % 2 else NO) + f" words {n}" for n in range(N_ROWS)],
            "n_output_tokens": pd.array([5] * N_ROWS, dtype="Int64"),
        }
    )
    write_table(tests_table, tmp_path / "test.parquet")
    write_table(responses, tmp_path / "responses.parquet")
    return tmp_path


def _label(d, out="labels.parquet"):
    return run_label(str(d / "responses.parquet"), str(d / "test.parquet"), str(d / out), "DR",
                     ["rule"], None)  # fmt: skip


def _score(d, prefix=""):
    return run_score(
        str(d / "responses.parquet"), str(d / "labels.parquet"), str(d / "test.parquet"),
        str(d / f"{prefix}rows.parquet"), str(d / f"{prefix}summary.parquet"), "m", "DR", "DR",
        ["rule"], {"rouge": {}, "bleu": {}}, device="cpu", seed=0,
    )  # fmt: skip


# A child process that runs one stage and is SIGKILLed halfway through writing its output.
KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import pyarrow.parquet as pq
    from imhibench.common import io
    real = pq.write_table

    def write_half_then_die(table, where, **kw):
        real(table, where, **kw)
        data = open(where, "rb").read()
        open(where, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    io.pq.write_table = write_half_then_die
    from pathlib import Path
    from test_faults import _label, _score
    {call}(Path({directory!r}))
    """
)


@pytest.mark.parametrize("stage", ["label", "score"])
def test_stage_killed_mid_write_leaves_no_output_and_rerun_is_identical(stage_inputs, stage):
    d = stage_inputs
    _label(d)
    if stage == "score":
        _score(d)
    outputs = ["labels.parquet"] if stage == "label" else ["rows.parquet", "summary.parquet"]
    clean = {}
    for name in outputs:
        clean[name] = read_table(d / name)
        (d / name).unlink()
    code = KILLED_MID_WRITE.format(
        repo=str(REPO), tests=str(REPO / "tests"), directory=str(d), call=f"_{stage}"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr[-2000:]
    assert not any((d / name).exists() for name in outputs)  # only a hidden temporary file
    assert _leftovers(d)  # the half-written temporary file is there, under another name
    _label(d) if stage == "label" else _score(d)
    for name in outputs:
        pd.testing.assert_frame_equal(read_table(d / name), clean[name])


def _disk_full_after_half(monkeypatch, fail_on: str | None = None):
    """pyarrow writes half a file, then the disk is full (for paths containing `fail_on`)."""
    real = io.pq.write_table

    def write(table, where, **kw):
        if fail_on and fail_on not in str(where):
            return real(table, where, **kw)
        real(table, where, **kw)
        data = Path(where).read_bytes()
        Path(where).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))

    monkeypatch.setattr(io.pq, "write_table", write)


def test_disk_full_leaves_no_partial_output(stage_inputs, monkeypatch):
    d = stage_inputs
    _label(d)
    before = (d / "labels.parquet").read_bytes()
    with monkeypatch.context() as patch:
        _disk_full_after_half(patch)
        with pytest.raises(OSError, match="No space left"):
            _label(d, "labels-new.parquet")
        with pytest.raises(OSError, match="No space left"):
            _label(d)  # over an existing output: the old file stays whole
        with pytest.raises(OSError, match="No space left"):
            _score(d)
    assert not (d / "labels-new.parquet").exists()
    assert (d / "labels.parquet").read_bytes() == before
    assert not (d / "rows.parquet").exists() and not (d / "summary.parquet").exists()
    assert _leftovers(d) == []
    _score(d)
    assert len(read_table(d / "rows.parquet")) == N_ROWS


def _shard_files(out) -> list[Path]:
    return sorted(shard_dir(out).glob("shard-*.parquet"))


@pytest.mark.usefixtures("one_torch_thread")
def test_disk_full_while_saving_a_shard_then_rerun(
    test_set, tmp_path, demo_models, writes, monkeypatch
):
    out = tmp_path / "out.parquet"
    clean = _generate(test_set, tmp_path / "clean.parquet", demo_models)
    saved: list[str] = []
    real = io.pq.write_table

    def second_shard_fills_the_disk(table, where, **kw):
        if "shard-" in str(where) and saved:
            real(table, where, **kw)
            data = Path(where).read_bytes()
            Path(where).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        if "shard-" in str(where):
            saved.append(str(where))
        return real(table, where, **kw)

    writes.clear()
    with monkeypatch.context() as patch:
        patch.setattr(io.pq, "write_table", second_shard_fills_the_disk)
        with pytest.raises(OSError, match="No space left"):
            _generate(test_set, out, demo_models)
    assert not out.exists()
    assert len(_shard_files(out)) == 1 and _leftovers(shard_dir(out)) == []
    first_shard = writes[0]
    writes.clear()
    again = _generate(test_set, out, demo_models)
    # the whole first shard was kept; the half-written one was never trusted
    assert not set(first_shard) & {row for shard in writes for row in shard}
    assert sorted(first_shard + [row for shard in writes for row in shard]) == sorted(
        clean["row_id"]
    )
    pd.testing.assert_frame_equal(again, clean)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("damage", ["half-file", "rows-missing"])
def test_damaged_shard_is_regenerated_not_trusted(test_set, tmp_path, demo_models, writes, damage):
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    out.unlink()  # as if killed after the shards, before the output
    shard = _shard_files(out)[1]
    rows = read_table(shard)
    if damage == "half-file":
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
        expected = sorted(rows["row_id"])
    else:  # a shard that lost a row: only that row is answered again
        write_table(rows.head(len(rows) - 1), shard, io.read_provenance(shard))
        expected = [rows["row_id"].iloc[-1]]
    writes.clear()
    again = _generate(test_set, out, demo_models)
    assert sorted(r for shard in writes for r in shard) == expected
    pd.testing.assert_frame_equal(again, first)
