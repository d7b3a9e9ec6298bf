"""A paid model-metric job (the LLM judge through ``run_model_metric``, as rule
``score_metric_api`` runs it) in real subprocesses against the loopback fake: one writer per
output, and a SIGTERM that saves the answers in flight before the job exits."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
from fake_openai import FakeOpenAI, serve
from support import REPO, journaled_rows

from imhibench.common.io import read_table, write_table
from imhibench.score.metrics.judge import ASPECTS

KEY_ENV = "IMHI_FAKE_JUDGE_KEY"
JOB = """
import json, sys
from imhibench.common.logs import configure_job
from imhibench.score.stage import run_model_metric
configure_job(None)
run_model_metric(**json.loads(sys.argv[1]))
"""


def _query(n: int) -> str:
    return f'Consider this post: "post number {n:02d}" Question: Does the poster suffer?'


def _inputs(tmp_path: Path, n: int) -> dict:
    """A test set and responses of ``n`` rows; the job's arguments."""
    ids = [f"DR-{i}" for i in range(n)]
    test = pd.DataFrame(
        {"row_id": ids, "query": [_query(i) for i in range(n)], "gold_answer": "Yes. Reasoning."}
    )
    write_table(test, tmp_path / "test.parquet", {"split": "instruction"})
    responses = pd.DataFrame({"row_id": ids, "response": "Yes. Reasoning: low mood."})
    write_table(responses, tmp_path / "responses.parquet", {"stage": "generate"})
    return {
        "metric": "llm_judge", "responses_path": str(tmp_path / "responses.parquet"),
        "test_set_path": str(tmp_path / "test.parquet"),
        "out_path": str(tmp_path / "out" / "DR.parquet"), "model": "m", "dataset": "DR",
        "device": "cpu",
    }  # fmt: skip


class Judge:
    """The fake judge's answers, and the rows whose answer it produced (to be sent)."""

    def __init__(self) -> None:
        self.answered: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> tuple[str, None]:
        first = body["messages"][0]["content"]
        row = next(f"DR-{i}" for i in range(100) if f'"post number {i:02d}"' in first)
        with self.lock:
            self.answered.append(row)
        return "\n".join(f"{aspect}: 2" for aspect in ASPECTS), None


def _options(url: str, concurrency: int) -> dict:
    api = {"base_url": url, "model": "judge-x", "api_key_env": KEY_ENV, "backoff_s": 0.01,
           "concurrency": concurrency}  # fmt: skip
    return {"backend": "api", "api": api}


def _start(args: dict) -> subprocess.Popen:
    env = {**os.environ, KEY_ENV: "sk-test-fake-key", "PYTHONPATH": f"{REPO}"}
    return subprocess.Popen(
        [sys.executable, "-c", JOB, json.dumps(args)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _journal(args: dict) -> Path:
    return Path(args["out_path"].removesuffix(".parquet") + ".llm_judge.journal.jsonl")


def _wait_for_saved(job: subprocess.Popen, journal: Path, n: int) -> None:
    deadline = time.monotonic() + 90
    while len(journaled_rows(journal)) < n:
        assert job.poll() is None, job.stdout.read()
        assert time.monotonic() < deadline, f"fewer than {n} rows saved in 90 s"
        time.sleep(0.02)


def test_a_second_job_on_the_same_output_stops_at_once(tmp_path):
    """The orphan of a killed snakemake and its rerun: the second stops at once naming the
    first, which finishes undisturbed; every row is paid for once."""
    n = 8
    judge = Judge()
    fake = FakeOpenAI(chat_reply=judge, delay_s=1.0)
    args = _inputs(tmp_path, n)
    with serve(fake) as url:
        args["options"] = _options(url, concurrency=1)
        first = _start(args)
        try:
            _wait_for_saved(first, _journal(args), 1)
            second = _start(args)
            output, _ = second.communicate(timeout=60)
            assert second.returncode == 1, output
            assert first.poll() is None  # still running: the second stopped before it ended
            first_output, _ = first.communicate(timeout=120)
            assert first.returncode == 0, first_output
        finally:
            first.kill()
            first.wait()
    assert f"another job is writing this output: pid {first.pid} on host {platform.node()}" in (
        output
    )
    assert sorted(judge.answered) == sorted(f"DR-{i}" for i in range(n))  # each row once
    assert len(fake.bodies) == n
    assert read_table(args["out_path"])["llm_judge_overall"].tolist() == [2.0] * n


def test_sigterm_saves_the_answers_in_flight(tmp_path):
    """SIGTERM (Snakemake, SLURM) while requests are in flight: no new request, every answer the
    server produced is journaled, exit 128 + SIGTERM; the rerun asks only the rows left."""
    n = 12
    judge = Judge()
    fake = FakeOpenAI(chat_reply=judge, delay_s=1.0)
    args = _inputs(tmp_path, n)
    journal = _journal(args)
    with serve(fake) as url:
        args["options"] = _options(url, concurrency=3)
        job = _start(args)
        try:
            _wait_for_saved(job, journal, 3)
            job.send_signal(signal.SIGTERM)
            output, _ = job.communicate(timeout=60)
        finally:
            job.kill()
            job.wait()
        time.sleep(1.5)  # a request the server still held has been answered by now
        saved = journaled_rows(journal)
        assert job.returncode == 128 + signal.SIGTERM, output
        assert "stopped by SIGTERM" in output and "run the job again to resume" in output
        assert 3 <= len(saved) < n
        assert sorted(judge.answered) == sorted(saved)  # no answer the server sent was lost
        rerun = _start(args)
        output, _ = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, output
    assert sorted(judge.answered) == sorted(f"DR-{i}" for i in range(n))  # each row once
    assert read_table(args["out_path"])["llm_judge_overall"].tolist() == [2.0] * n
