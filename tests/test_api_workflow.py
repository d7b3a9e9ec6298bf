"""kind: api in the workflow: where API jobs run (run_on), and one end-to-end run of an API
model through `snakemake` against the loopback fake endpoint, through label, score and
aggregate, with the API key grepped for in every file the run wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fake_openai import FINGERPRINT, FakeOpenAI, serve
from support import REPO, require_mirror

from imhibench.common.io import read_provenance

KEY = "sk-test-NEVER-WRITE-ME-e2e"
KEY_ENV = "IMHI_FAKE_OPENAI_KEY"


def api_model(url: str, run_on: str, **resources) -> dict:
    return {
        "kind": "api",
        "split": "instruction",
        "api": {
            "base_url": url,
            "model": "gpt-fake",
            "api_key_env": KEY_ENV,
            "concurrency": 2,
            "backoff_s": 0.01,
            "max_backoff_s": 0.05,
        },
        "run_on": run_on,
        "resources": {"gpu": 0, "cpus": 1, "mem_mb": 1000, "runtime": 5, **resources},
    }


def snakemake(workdir: Path, overlay: dict, *args: str, timeout: int = 900):
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "1", "--configfile",
        str(REPO / "workflow_config" / "demo.yaml"), str(workdir / "overlay.yaml"), *args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", KEY_ENV: KEY}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def jobs_by_rule(dry_run_output: str) -> dict[str, list[str]]:
    """{model wildcard: [rule, resources line]} of the generate jobs of a dry run."""
    found = {}
    for block in re.split(r"\n(?=\[)|\n\n", dry_run_output):
        rule = re.search(r"^\S*rule (\w+):", block, flags=re.M)
        model = re.search(r"wildcards: model=([\w.-]+)", block)
        if rule and model and rule[1].startswith("generate"):
            resources = re.search(r"resources: (.*)", block)
            found[model[1]] = [rule[1], resources[1] if resources else ""]
    return found


PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DeploymentSettings, OutputSettings,
        ResourceSettings, StorageSettings, WorkflowSettings)
    snakefile, workdir, *configfiles = sys.argv[1:]
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            snakefile=Path(snakefile), workdir=Path(workdir),
            config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
            resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(), deployment_settings=DeploymentSettings(),
        )._workflow
        print(json.dumps(sorted(workflow._localrules)))
    """
)


def test_api_models_run_where_run_on_says(tmp_path):
    url = "http://127.0.0.1:9/v1"
    overlay = {
        "models": ["api-here", "api-there", "demo-llama"],
        "datasets": ["DR"],
        "model_catalog": {
            "api-here": api_model(url, "local"),
            "api-there": api_model(url, "cluster", slurm_partition="with-internet"),
        },
    }
    run = snakemake(tmp_path, overlay, "--dry-run", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = jobs_by_rule(run.stdout + run.stderr)
    assert jobs["api-here"][0] == "generate_api_local"
    assert jobs["api-there"][0] == "generate_api"
    assert "slurm_partition=with-internet" in jobs["api-there"][1]
    assert "gpu" not in jobs["api-there"][1] and "gpu" not in jobs["api-here"][1]
    assert jobs["demo-llama"][0] == "generate"
    configs = [REPO / "workflow_config" / "demo.yaml", tmp_path / "overlay.yaml"]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "Snakefile"), str(tmp_path), *map(str, configs)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    local = json.loads(probe.stdout.strip().splitlines()[-1])
    assert "generate_api_local" in local and "generate_api" not in local
    assert "generate" not in local


@pytest.mark.slow
def test_api_model_end_to_end_through_snakemake(tmp_path):
    mirror = require_mirror()
    fake = FakeOpenAI(key=KEY, sequence=["429", "filter"])  # 1st request: 429, 2nd: filtered
    with serve(fake) as url:
        overlay = {
            "models": ["demo-api"],
            "datasets": ["DR", "t-sid"],
            "rows_per_dataset": 3,
            "imhi": {"source": str(mirror)},
            "model_catalog": {"demo-api": api_model(url, "local")},
        }
        # the metric validation (rated explanations, no model of the config) and the plots are
        # left out: the demo runs check them (test_demo_run, test_report, test_slurm)
        omit = ("--omit-from", "rated_explanations", "plots")
        run = snakemake(tmp_path, overlay, *omit)
        assert run.returncode == 0, run.stderr[-5000:]
        asked = sum(fake.counts().values())
        # forcing the generate jobs again pays for nothing: every row is in the journal
        again = snakemake(
            tmp_path, overlay, "--forcerun", "generate_api_local", "--until", "generate_api_local"
        )
        assert again.returncode == 0, again.stderr[-5000:]
    assert asked == 6 + 1  # six rows, one of them retried after the 429
    assert sum(fake.counts().values()) == asked
    table = pd.read_parquet(tmp_path / "results" / "tables" / "weighted_f1.parquet")
    reproduced = table[table["status"] == "reproduced"]
    assert reproduced["model"].tolist() == ["demo-api"]
    assert [c for c in table.columns if c in ("DR", "t-sid")] == ["DR", "t-sid"]
    assert reproduced[["DR", "t-sid"]].notna().all().all()
    records = [
        read_provenance(tmp_path / "results" / "generate" / "demo-api" / f"{d}.parquet")
        for d in ("DR", "t-sid")
    ]
    assert sum(r["api"]["content_filtered"] for r in records) == 1
    assert all(r["api"]["system_fingerprints"] == {FINGERPRINT: 3} for r in records)
    labels = pd.concat(
        pd.read_parquet(tmp_path / "results" / "label" / "demo-api" / f"{d}.parquet")
        for d in ("DR", "t-sid")
    )
    assert labels["empty_response"].sum() == 1
    assert (tmp_path / "results" / "tables" / "provenance.json").is_file()
    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []
    assert KEY not in run.stdout + run.stderr + again.stdout + again.stderr
