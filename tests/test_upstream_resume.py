"""`engine: upstream` after kills, resumes and `rows_per_dataset` changes: a fresh run's answers.

Upstream batches 8 rows in file order and its ``max_length`` counts the padded width of the
batch, so an answer depends on the rows batched with it (issue 18 item 2). Each scenario below is
a sequence of runs of one job (some killed after a few shards, with varying ``rows``) on the
tiny LLaMA with mixed prompt widths; every completed run must equal one uninterrupted run.
"""

from __future__ import annotations

import json
import random
import shutil
import signal

import pandas as pd
import pytest

from imhibench.common.io import write_table
from imhibench.generate import decoding
from imhibench.generate.shards import ShardStore
from imhibench.generate.signals import GenerationStopped
from imhibench.generate.stage import run_generate

ROWS = 20  # batches 0-7, 8-15, 16-19
SETTINGS = {"dtype": "float32", "shard_rows": 8, "engine": "upstream"}
WORDS = ("sad", "tired", "alone", "work", "sleep", "boss", "family", "money", "school", "help")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _queries() -> list[str]:
    """Mixed prompt widths: every fourth row, from row 2 on, much wider than the others."""
    rng = random.Random(7)
    return [
        f"Post: {' '.join(rng.choice(WORDS) for _ in range(n))}. Stressed?"
        for n in (28 if i % 4 == 2 else rng.randint(2, 12) for i in range(ROWS))
    ]


@pytest.fixture
def job(tmp_path, demo_models, monkeypatch):
    """run(out, rows, kill_after=None): one generate job; ``kill_after`` shards, then a kill."""
    test_set = tmp_path / "T.parquet"
    ids = [f"T-{i:05d}" for i in range(ROWS)]
    write_table(pd.DataFrame({"row_id": ids, "query": _queries(), "gold_answer": "x"}), test_set)
    # A max_length a little above the widest prompt (2048 is slow on CPU): a narrow batch
    # gets many more new tokens than a wide one, so batch composition shows in the answers.
    monkeypatch.setattr(decoding, "UPSTREAM_MAX_LENGTH", 96)
    write = ShardStore.write

    def run(out, rows: int, kill_after: int | None = None, model_dir=None, **settings):
        written = []

        def counted(self, table, *args):
            path = write(self, table, *args)
            written.append(path)
            if len(written) == kill_after:
                raise GenerationStopped(signal.SIGKILL)  # killed right after this shard
            return path

        spec = {"kind": "causal", "split": "instruction"}
        seed = settings.pop("seed", 0)
        with monkeypatch.context() as patch:
            patch.setattr(ShardStore, "write", counted)
            try:
                table = run_generate(str(test_set), str(out), "tiny", spec,
                                     model_dir or demo_models["causal"], None, None,
                                     {**SETTINGS, **settings}, rows=rows, device="cpu",
                                     seed=seed)  # fmt: skip
            except GenerationStopped:
                return None
        return table["response"].tolist()

    return run


def test_widths_are_mixed_enough_to_change_answers(job, tmp_path):
    """The scenario has teeth: the same rows batched otherwise answer otherwise."""
    fresh = job(tmp_path / "fresh.parquet", ROWS)
    alone = job(tmp_path / "alone.parquet", 10)
    assert fresh[:8] == alone[:8] and fresh[8:10] != alone[8:10]


def test_more_rows_after_a_complete_run(job, tmp_path):
    """As reproduced in the issue: 10 rows, then 12: rows 8-11 are one batch, as fresh."""
    out = tmp_path / "out.parquet"
    job(out, 10)
    assert job(out, 12) == job(tmp_path / "fresh.parquet", 12)


def test_random_kills_resumes_and_row_counts(job, tmp_path):
    rng = random.Random(18)
    fresh: dict[int, list[str]] = {}
    for scenario in range(4):
        out = tmp_path / f"s{scenario}" / "out.parquet"
        steps = []
        for _ in range(rng.randint(2, 4)):
            rows = rng.randint(1, ROWS)
            kill_after = rng.choice([None, 1, 2])
            steps.append((rows, kill_after))
            got = job(out, rows, kill_after)
            if got is None:
                continue
            if rows not in fresh:
                fresh[rows] = job(tmp_path / f"fresh-{rows}.parquet", rows)
            assert got == fresh[rows], f"scenario {scenario}: runs {steps}"
        final = job(out, ROWS)
        if ROWS not in fresh:
            fresh[ROWS] = job(tmp_path / "fresh-all.parquet", ROWS)
        assert final == fresh[ROWS], f"scenario {scenario}: runs {steps}, then all rows"


def test_sampling_checkpoint_resumes_as_a_fresh_run(job, tmp_path, demo_models):
    """``decoding: checkpoint`` on a checkpoint that samples (as Llama-2-chat ships): torch is
    seeded per batch, so a resumed batch samples as in an uninterrupted run even where the
    fresh run's shard (16 rows) began a batch earlier."""
    model_dir = shutil.copytree(demo_models["causal"], tmp_path / "sampling")
    path = model_dir / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "do_sample": True,
                                "temperature": 0.6, "top_p": 0.9}))  # fmt: skip
    sampled = {"model_dir": model_dir, "decoding": "checkpoint", "seed": 5, "shard_rows": 16}
    out = tmp_path / "out.parquet"
    job(out, 8, **sampled)
    resumed = job(out, ROWS, **sampled)
    assert resumed == job(tmp_path / "fresh.parquet", ROWS, **sampled)
    assert resumed != job(tmp_path / "greedy.parquet", ROWS, model_dir=model_dir)
