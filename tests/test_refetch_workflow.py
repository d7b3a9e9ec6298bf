"""A finished run, then its test files fetched again (`--forcerun fetch_test_set`, as
`--forceall` would): the test sets are equal (rows and provenance), and the generate jobs
Snakemake reruns after them rebuild their outputs from the saved answers without generating
(issue 18 item 1)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from demo_commands import run, snakemake_command
from support import copy_run

from imhibench.common.io import read_provenance

pytestmark = pytest.mark.slow
# A causal model (instruction split) and a seq2seq model (completion split) on two test sets.
CELLS = [(model, dataset) for model in ("demo-llama", "demo-bart") for dataset in ("DR", "SAD")]


def fetched(path: Path) -> tuple[pd.DataFrame, dict]:
    """A fetched test file's rows and provenance, less the mirror it came from: the refetch
    reads the local mirror, the demo run a loopback server of the same checksummed files."""
    record = read_provenance(path)
    record.pop("source")
    return pd.read_parquet(path), record


def test_identical_refetch_after_a_finished_run_generates_nothing(finished_demo, tmp_path):
    finished, config = finished_demo
    workdir = copy_run(finished, tmp_path / "copy")  # the shared run stays untouched
    test_sets = sorted((workdir / "resources" / "imhi").rglob("*.parquet"))
    before = {path: fetched(path) for path in test_sets}
    targets = [f"results/generate/{model}/{dataset}.parquet" for model, dataset in CELLS]
    outputs = [workdir / target for target in targets]
    answers = {p: pd.read_parquet(p) for p in outputs}

    # the generate jobs of CELLS and the test files they read: the stages after them read their
    # outputs as any rerun does
    command = snakemake_command(workdir, "--cores", "2", *targets, "--forcerun", "fetch_test_set",
                                configs=(config,))  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    assert output.count("localrule generate:") == len(CELLS), output[-4000:]  # Snakemake reran them
    assert "rule fetch_test_set:" in output
    for path in test_sets:
        rows, record = fetched(path)
        pd.testing.assert_frame_equal(rows, before[path][0], check_exact=True)
        assert record == before[path][1], path
    for path in outputs:
        log = workdir / "logs" / "generate" / path.parent.name / f"{path.stem}.log"
        text = log.read_text()
        assert "every row is saved" in text and "shard(s) of up to" not in text, text[-2000:]
        pd.testing.assert_frame_equal(pd.read_parquet(path), answers[path])
