"""A finished run, then its test files fetched again (`--forcerun fetch_test_set`, as
`--forceall` would): the test sets are byte-equal, and the generate jobs Snakemake reruns after
them rebuild their outputs from the saved answers without generating (issue 18 item 1)."""

from __future__ import annotations

import pandas as pd
import pytest
from small_demo import SMALL, run, snakemake_command
from support import copy_run

pytestmark = pytest.mark.slow


def test_identical_refetch_after_a_finished_run_generates_nothing(small_demo, tmp_path):
    finished, config = small_demo
    workdir = copy_run(finished, tmp_path / "copy")  # the shared run stays untouched
    test_sets = sorted((workdir / "resources" / "imhi").rglob("*.parquet"))
    before = {p.relative_to(workdir): p.read_bytes() for p in test_sets}
    outputs = sorted((workdir / "results" / "generate").glob("*/*.parquet"))
    answers = {p: pd.read_parquet(p) for p in outputs}
    assert len(outputs) == len(SMALL["models"]) * len(SMALL["datasets"])

    # up to the generate jobs: the stages after them read their outputs as any rerun does
    command = snakemake_command(workdir, "--cores", "2", "--forcerun", "fetch_test_set",
                                "--until", "generate", configs=(config,))  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rule generate:" in result.stdout + result.stderr  # Snakemake did rerun them
    assert {p.relative_to(workdir): p.read_bytes() for p in test_sets} == before
    for path in outputs:
        log = workdir / "logs" / "generate" / path.parent.name / f"{path.stem}.log"
        text = log.read_text()
        assert "every row is saved" in text and "shard(s) of up to" not in text, text[-2000:]
        pd.testing.assert_frame_equal(pd.read_parquet(path), answers[path])
