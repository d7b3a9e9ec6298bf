"""The generate stage of kind: api: accounting in provenance, the row journal, and real kills
(SIGTERM, SIGKILL) of a job against the loopback fake endpoint: no saved row is asked twice."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from fake_openai import FINGERPRINT, SERVED_MODEL, FakeOpenAI, answer_text, serve
from support import REPO, journaled_rows

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, write_table
from imhibench.generate.journal import RowJournal, journal_path
from imhibench.generate.stage import run_generate

KEY = "sk-test-NEVER-WRITE-ME-42"
KEY_ENV = "IMHI_FAKE_OPENAI_KEY"


def write_test_set(path: Path, n: int) -> Path:
    table = pd.DataFrame(
        {
            "row_id": [f"DR-{i}" for i in range(n)],
            "query": [
                f"Post {i}: I cannot sleep and feel empty. Does the poster suffer?"
                for i in range(n)
            ],
            "gold_answer": ["yes"] * n,
        }
    )
    write_table(table, path, {"stage": "fetch"})
    return path


def api_spec(url: str, **api) -> dict:
    options = {
        "base_url": url, "model": "gpt-fake", "api_key_env": KEY_ENV, "concurrency": 2,
        "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 10, **api,
    }  # fmt: skip
    return {"kind": "api", "split": "instruction", "api": options, "run_on": "local"}


def generate(tmp_path: Path, spec: dict, rows: int | None = None) -> pd.DataFrame:
    return run_generate(
        test_set_path=str(tmp_path / "DR.parquet"),
        out_path=str(tmp_path / "out" / "DR.parquet"),
        model="fake-api",
        model_spec=spec,
        model_dir=None,
        base_model_dir=None,
        responses_path=None,
        settings={"max_new_tokens": 32},
        rows=rows,
        seed=3,
    )


def files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_answers_accounting_and_no_key_anywhere(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)
    write_test_set(tmp_path / "DR.parquet", 5)
    queries = pd.read_parquet(tmp_path / "DR.parquet")["query"].tolist()
    fake = FakeOpenAI(key=KEY, faults={queries[1]: ["429", "ok"], queries[3]: ["filter"]})
    prices = {"prompt": 2.0, "completion": 10.0}
    with serve(fake) as url:
        table = generate(tmp_path, api_spec(url, price_per_million_tokens=prices))
    out = tmp_path / "out" / "DR.parquet"
    written = pd.read_parquet(out)
    assert list(written.columns) == [
        "row_id", "response", "n_output_tokens", "prompt_tokens", "finish_reason",
    ]  # fmt: skip
    assert written["response"].tolist() == [
        "" if i == 3 else answer_text(q) for i, q in enumerate(queries)
    ]
    assert table["finish_reason"].tolist()[3] == "content_filter"
    record = read_provenance(out)
    api = record["api"]
    prompt = sum(len(q.split()) for q in queries)
    completion = int(written["n_output_tokens"].sum())
    assert (api["prompt_tokens"], api["completion_tokens"]) == (prompt, completion)
    assert api["estimated_cost"] == pytest.approx((prompt * 2.0 + completion * 10.0) / 1e6)
    assert api["models_returned"] == {SERVED_MODEL: 5}
    assert api["system_fingerprints"] == {FINGERPRINT: 5}
    assert (api["empty_responses"], api["content_filtered"]) == (1, 1)
    assert api["requests_retried"] == 1
    assert api["request"] == {"temperature": 0, "max_tokens": 32, "seed": 3}
    assert record["checkpoints"]["endpoint"]["base_url"] == url
    assert record["output_tokens"] == completion
    assert "rows/s" in caplog.text and "tokens/s" in caplog.text
    assert files_holding(tmp_path, KEY) == []
    assert KEY not in caplog.text


def test_completed_rows_are_never_asked_again(tmp_path, monkeypatch):
    """The journal outlives the output: more rows, or a forced rerun, ask only new rows."""
    monkeypatch.setenv(KEY_ENV, KEY)
    write_test_set(tmp_path / "DR.parquet", 6)
    fake = FakeOpenAI(key=KEY)
    with serve(fake) as url:
        generate(tmp_path, api_spec(url), rows=3)
        generate(tmp_path, api_spec(url))
        generate(tmp_path, api_spec(url))
    assert sorted(fake.counts().values()) == [1] * 6
    record = read_provenance(tmp_path / "out" / "DR.parquet")
    assert record["api"]["resumed_rows"] == 6


def test_changed_settings_keep_the_old_journal_aside(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    write_test_set(tmp_path / "DR.parquet", 2)
    fake = FakeOpenAI(key=KEY)
    with serve(fake) as url:
        generate(tmp_path, api_spec(url))
        generate(tmp_path, api_spec(url, model="gpt-other"))
    assert sorted(fake.counts().values()) == [2, 2]
    stale = list((tmp_path / "out").glob("DR.parquet.journal.jsonl.stale-*"))
    assert len(stale) == 1 and len(stale[0].read_text().splitlines()) == 3
    assert '(changed: model "gpt-fake" -> "gpt-other")' in caplog.text


def test_journal_survives_a_torn_last_line(tmp_path):
    journal = RowJournal(tmp_path / "x.parquet")
    assert journal.open({"k": 1}) == {}
    journal.append({"row_id": "a", "response": "A"})
    journal.close()
    with open(journal_path(tmp_path / "x.parquet"), "ab") as fh:
        fh.write(b'{"row_id": "b", "resp')  # a write cut by SIGKILL
    journal = RowJournal(tmp_path / "x.parquet")
    assert list(journal.open({"k": 1})) == ["a"]
    journal.append({"row_id": "c", "response": "C"})
    journal.close()
    assert sorted(RowJournal(tmp_path / "x.parquet").open({"k": 1})) == ["a", "c"]


def test_a_foreign_file_in_the_journals_place_is_refused(tmp_path):
    journal_path(tmp_path / "x.parquet").write_text("row_id,response\n")
    with pytest.raises(ImhiBenchError, match="not an imhi-bench journal"):
        RowJournal(tmp_path / "x.parquet").open({})


# ---- real kills ------------------------------------------------------------------------

JOB = textwrap.dedent(
    """
    import json, logging, sys
    sys.path.insert(0, sys.argv[1])
    from imhibench.generate.stage import run_generate
    logging.basicConfig(level=logging.INFO)
    run_generate(
        test_set_path=sys.argv[2], out_path=sys.argv[3], model="fake-api",
        model_spec=json.loads(sys.argv[4]), model_dir=None, base_model_dir=None,
        responses_path=None, settings={"max_new_tokens": 32}, rows=None, seed=3,
        progress_interval_s=0.5,
    )
    """
)


def start_job(tmp_path: Path, spec: dict) -> subprocess.Popen:
    args = [str(REPO), str(tmp_path / "DR.parquet"), str(tmp_path / "out" / "DR.parquet")]
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", JOB, *args, json.dumps(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def saved_rows(tmp_path: Path) -> list[str]:
    return journaled_rows(journal_path(tmp_path / "out" / "DR.parquet"))


def kill_after_saved(job: subprocess.Popen, tmp_path: Path, n: int, sig: int) -> list[str]:
    deadline = time.monotonic() + 60
    while len(saved_rows(tmp_path)) < n:
        assert job.poll() is None, job.stdout.read()
        assert time.monotonic() < deadline, "job saved too few rows in 60 s"
        time.sleep(0.02)
    job.send_signal(sig)
    output, _ = job.communicate(timeout=60)
    return output


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_job_resumes_without_asking_a_saved_row_again(tmp_path, sig):
    n = 40
    write_test_set(tmp_path / "DR.parquet", n)
    queries = pd.read_parquet(tmp_path / "DR.parquet")["query"].tolist()
    row_of = {q: f"DR-{i}" for i, q in enumerate(queries)}
    fake = FakeOpenAI(key=KEY, delay_s=0.05)
    with serve(fake) as url:
        spec = api_spec(url, concurrency=3)
        first = start_job(tmp_path, spec)
        output = kill_after_saved(first, tmp_path, 8, sig)
        saved = saved_rows(tmp_path)
        asked_before = fake.counts()
        assert 8 <= len(saved) < n
        if sig == signal.SIGTERM:
            assert first.returncode == 128 + signal.SIGTERM, output
            assert "run the job again to resume" in output
            # the answers in flight were saved before exiting: every request paid is kept
            assert sorted(row_of[q] for q in asked_before) == sorted(saved)
        else:
            assert first.returncode == -signal.SIGKILL
        second = start_job(tmp_path, spec)
        output, _ = second.communicate(timeout=120)
        assert second.returncode == 0, output
    counts = fake.counts()
    assert {row_of[q] for q in counts} == set(row_of.values())  # every row answered
    for row_id in saved:
        assert counts[queries[int(row_id.split("-")[1])]] == 1, f"{row_id} asked twice"
    repeated = [row_of[q] for q, c in counts.items() if c > 1]
    assert len(repeated) <= 3  # at most the requests in flight at the SIGKILL
    if sig == signal.SIGTERM:
        assert repeated == []
    written = pd.read_parquet(tmp_path / "out" / "DR.parquet")
    assert written["response"].tolist() == [answer_text(q) for q in queries]
    assert files_holding(tmp_path, KEY) == []


def test_identical_refetch_asks_nothing_again_and_a_changed_query_only_its_row(
    tmp_path, monkeypatch, caplog
):
    """Issue 18 item 1, as reproduced: 4 rows answered and journaled, the same pinned DR.csv
    fetched again (what --forceall or rm -r resources/imhi do): the Parquet is byte-equal, no
    row is asked again, no journal is set aside. A fetch whose content changed (one query)
    asks that row only; the old answer stays in the journal."""
    from support import mirror_sha256, require_mirror

    from imhibench.fetch.test_sets import run_fetch_test_set

    relative = "test_data/test_instruction/DR.csv"
    source, parquet = require_mirror() / relative, tmp_path / "DR.parquet"

    def fetch() -> bytes:
        run_fetch_test_set(str(source), mirror_sha256(relative), "DR", "DR", "instruction",
                           str(tmp_path / "DR.csv"), str(parquet))  # fmt: skip
        return parquet.read_bytes()

    monkeypatch.setenv(KEY_ENV, KEY)
    fake = FakeOpenAI(key=KEY)
    first = fetch()
    with serve(fake) as url:
        answers = generate(tmp_path, api_spec(url), rows=4)
        assert sum(fake.counts().values()) == 4
        time.sleep(1.1)  # a re-fetch a second later: a recorded time of day would differ
        assert fetch() == first
        with caplog.at_level(logging.INFO, logger="imhibench"):
            again = generate(tmp_path, api_spec(url), rows=4)
        assert sum(fake.counts().values()) == 4  # nothing asked again
        assert "4 of 4 rows already answered" in caplog.text
        pd.testing.assert_frame_equal(again, answers)
        assert list((tmp_path / "out").glob("*.stale-*")) == []
        table = pd.read_parquet(parquet)
        table.loc[2, "query"] = "Post: edited. Question: Does the poster suffer from depression?"
        write_table(table, parquet, read_provenance(parquet))
        generate(tmp_path, api_spec(url), rows=4)
    assert fake.counts()[table.loc[2, "query"]] == 1 and sum(fake.counts().values()) == 5
    journal = journal_path(tmp_path / "out" / "DR.parquet").read_text().splitlines()
    assert len(journal) == 1 + 5  # header, 4 answers, the changed row's new answer
