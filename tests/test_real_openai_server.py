"""kind: api against a real OpenAI-compatible server, not only our own fake: `transformers serve`
(the transformers[serving] extra) serving the demo's tiny LLaMA on CPU (conftest.py's
`served_demo_llama`), through `snakemake`.

The fake (tests/fake_openai.py) stays for the faults a real server does not produce on demand:
429, 500, `Retry-After`, content filter, a 401 that echoes the key.

That this test can fail on a client the real server disagrees with was shown by hand once: with
`extra_body={"top_k": 1}` added to both `create(...)` calls of `ApiBackend._request`
(imhibench/generate/api.py; vLLM accepts `top_k`, our fake ignores it), `transformers serve`
answers 422 Unprocessable Entity, the API jobs stop at their first row and
`test_served_models_through_the_pipeline` fails at its first `snakemake` run.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from demo_commands import run, snakemake_command, write_config
from support import journaled_rows, require_mirror

from imhibench.common.io import read_provenance
from imhibench.generate.journal import journal_path

DATASETS = ["DR"]  # one test set, few rows: a few minutes on 2 cores
ROWS = 4
RESUME_ROWS = 30  # DR rows of the kill-and-resume part (ROWS of them answered before)


def served_model(server, mode: str) -> dict:
    return {
        "kind": "api",
        "split": "instruction",  # as demo-llama
        "api": {
            "base_url": server.base_url,
            "model": server.model,
            "mode": mode,
            "api_key_env": None,  # started without an API key
            "concurrency": 1,  # one request in flight: one row at most lost to a SIGKILL
            "max_attempts": 2,
            "backoff_s": 0.1,
        },
        "run_on": "local",
        "resources": {"gpu": 0, "cpus": 1, "mem_mb": 1000, "runtime": 10},
    }


def overlay(server, **changes) -> dict:
    return {
        "models": ["demo-llama", "served-completions", "served-chat"],
        "datasets": DATASETS,
        "labelers": ["rule"],
        "rows_per_dataset": ROWS,
        "imhi": {"source": str(require_mirror())},
        "generation": {"engine": "static", "max_new_tokens": 12},
        "model_catalog": {
            "served-completions": served_model(server, "completions"),
            "served-chat": served_model(server, "chat"),
        },
        **changes,
    }


def generated(workdir: Path, model: str, dataset: str) -> pd.DataFrame:
    table = pd.read_parquet(workdir / "results" / "generate" / model / f"{dataset}.parquet")
    return table.set_index("row_id")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_served_models_through_the_pipeline(served_demo_llama, tmp_path):
    server = served_demo_llama
    workdir, configs = tmp_path / "work", tmp_path / "configs"
    configs.mkdir()
    config = write_config(configs / "served.yaml", overlay(server))
    before = {p: server.requests(p) for p in ("/v1/completions", "/v1/chat/completions")}
    # up to the answers: the stages after them read an API model's answers as any other model's
    # (test_api_workflow runs an API model through to the tables)
    until = ("--until", "generate", "generate_api_local")
    done = run(snakemake_command(workdir, "--cores", "2", *until, configs=(config,)))
    assert done.returncode == 0, done.stderr[-5000:]

    # the server serves the very weights the workflow built for demo-llama
    built = workdir / "resources" / "demo_models" / "causal" / "model.safetensors"
    assert sha256(built) == sha256(Path(server.model) / "model.safetensors")
    # one request per row and mode, nothing retried
    n = ROWS * len(DATASETS)
    assert server.requests("/v1/completions") - before["/v1/completions"] == n
    assert server.requests("/v1/chat/completions") - before["/v1/chat/completions"] == n

    results = workdir / "results"
    for dataset in DATASETS:
        static = generated(workdir, "demo-llama", dataset)
        completions = generated(workdir, "served-completions", dataset)
        assert len(static) == ROWS
        # mode completions: the query as a raw prompt, greedy, as the static engine
        assert completions["response"].to_dict() == static["response"].to_dict()

        chat = generated(workdir, "served-chat", dataset)
        assert chat.index.tolist() == static.index.tolist()
        assert chat["response"].str.strip().str.len().gt(0).all(), chat["response"]
        out = results / "generate" / "served-chat" / f"{dataset}.parquet"
        assert sorted(journaled_rows(journal_path(out))) == sorted(chat.index)
        api = read_provenance(out)["api"]
        assert api["completion_tokens"] == chat["n_output_tokens"].sum() > 0
        assert api["prompt_tokens"] == chat["prompt_tokens"].sum() > 0
        assert sum(api["finish_reasons"].values()) == ROWS
        # the server names the checkpoint it answered with (transformers serve: `<path>@main`)
        (returned,) = api["models_returned"]
        assert returned.startswith(server.model) and api["models_returned"][returned] == ROWS
        assert api["empty_responses"] == 0

    # A SIGKILL of the API job mid-way, then a resume: no answered row is asked again.
    more = write_config(configs / "more.yaml", {"rows_per_dataset": RESUME_ROWS})
    target = "results/generate/served-completions/DR.parquet"
    command = snakemake_command(workdir, "--cores", "1", target, configs=(config, more))
    journal = journal_path(workdir / target)
    asked = server.settled_requests("/v1/completions")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while len(journaled_rows(journal)) < ROWS + 3:
            assert job.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "the job saved too few rows in 300 s"
            time.sleep(0.01)
        os.killpg(job.pid, signal.SIGKILL)  # snakemake and the job it runs
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    saved = journaled_rows(journal)
    assert ROWS + 3 <= len(saved) < RESUME_ROWS, "not killed mid-way"
    asked_before_resume = server.settled_requests("/v1/completions")
    # at most the one request in flight at the SIGKILL was paid for and lost
    assert asked_before_resume - asked - (len(saved) - ROWS) in (0, 1)

    unlock = run(snakemake_command(workdir, "--unlock", target, configs=(config, more)))
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    resumed = run([*command, "--rerun-incomplete"])
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert server.settled_requests("/v1/completions") - asked_before_resume == (
        RESUME_ROWS - len(saved)
    )
    final = generated(workdir, "served-completions", "DR")
    assert len(final) == RESUME_ROWS
    assert sorted(journaled_rows(journal)) == sorted(final.index)  # each row journaled once
    assert read_provenance(workdir / target)["api"]["finish_reasons"]  # provenance written


@pytest.mark.slow
def test_the_server_is_killed_when_the_block_fails(request, tmp_path):
    from transformers_serve import require_serving, served

    require_serving()
    demo_models = request.getfixturevalue("demo_models")  # the session's build, after the skip
    with (
        pytest.raises(RuntimeError, match="a failing test"),
        served(Path(demo_models["causal"]), tmp_path / "serve.log") as server,
    ):
        pid = server.pid
        raise RuntimeError("a failing test")
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
