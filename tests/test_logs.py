"""Job logs: no library progress bars or misleading length warnings; each job says what it is
about to do; labelling and scoring report rows done, rows/s and time left."""

from __future__ import annotations

import logging

import pytest

from imhibench.common.logs import announce_job, configure_job
from imhibench.common.progress import Progress
from imhibench.common.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def job_log(tmp_path):
    path = tmp_path / "job.log"
    configure_job(path)
    yield path
    logging.getLogger().handlers.clear()


def test_library_progress_bars_are_off_in_jobs(job_log):
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils import are_progress_bars_disabled

    assert are_progress_bars_disabled()
    assert not transformers_logging.is_progress_bar_enabled()


def test_misleading_length_warning_is_dropped_other_warnings_are_kept(job_log, demo_models):
    from transformers import AutoTokenizer

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers.tokenization_utils_base")
    logger.addHandler(handler)
    try:
        tokenizer = AutoTokenizer.from_pretrained(demo_models["classifiers/DR"])
        tokenizer("word " * (tokenizer.model_max_length + 50))  # measured without truncation
        logger.warning("another warning")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["another warning"]


def test_job_log_starts_with_what_the_job_does(job_log, tmp_path):
    import pandas as pd

    from imhibench.common.io import write_table

    table = tmp_path / "responses.parquet"
    write_table(pd.DataFrame({"row_id": [f"r{i}" for i in range(7)], "response": "x"}), table)
    announce_job("label", "demo-llama", "DR", table, "cpu")
    announce_job("generate", "demo-llama", "DR", table, "auto", "bfloat16", row_limit=4)
    lines = job_log.read_text().splitlines()
    assert lines[0].endswith(
        "label: starting: model demo-llama, dataset DR, rows 7, device cpu, dtype float32"
    )
    assert "generate: starting: model demo-llama, dataset DR, rows 4, device " in lines[1]
    assert lines[1].endswith("dtype bfloat16")


def test_labelling_reports_rows_rate_and_time_left(job_log, demo_models):
    from imhibench.label import MentalBertLabeler

    labeler = MentalBertLabeler(demo_models["classifiers/DR"], get_task("DR"), "cpu", 4)
    labeler.predict([f"post number {i}" for i in range(10)])
    text = job_log.read_text()
    assert "done: MentalBERT DR: 10/10 rows (100.0%), " in text
    assert " rows/s, about 0:00:00 left" in text and "tokens/s" not in text


def test_scoring_reports_rows_and_rate_per_metric(job_log):
    from imhibench.score.metrics.explanation import compute_explanation_metrics

    compute_explanation_metrics(["a b c", "d e"], ["a b", "d e f"], {"rouge": {}}, "cpu")
    assert "done: rouge: 2/2 rows (100.0%), " in job_log.read_text()


def test_progress_without_tokens():
    clock = iter([0.0, 10.0, 10.0]).__next__
    progress = Progress("BARTScore", 40, clock=clock, count_tokens=False)
    progress.batch(20, 0)
    assert progress.line() == "BARTScore: 20/40 rows (50.0%), 2.00 rows/s, about 0:00:10 left"


@pytest.mark.parametrize("torch_first", [False, True], ids=["torch-later", "torch-imported"])
def test_the_job_thread_limit_reaches_torch_without_importing_it(torch_first):
    """A job that never uses torch does not pay its import (seconds) for the thread limit.
    One thread: torch takes OMP_NUM_THREADS up to the core count only."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        + ("import torch\n" if torch_first else "")
        + "from imhibench.common.logs import configure_job\n"
        "configure_job(None, 1)\n"
        "print('torch' in sys.modules)\n"
        "import torch\n"
        "print(torch.get_num_threads())\n"
    )
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: torch's default is already one thread")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(torch_first), "1"]
