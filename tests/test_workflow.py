"""End to end through `snakemake` in a subprocess, each on a small config of its own: the fetch's
checks and routes (a wrong checksum, a pinned hub revision, a local test file) and an orphaned
generate job. The whole demo's run and the tests reading it: test_demo_run.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from demo_commands import COMMIT
from demo_commands import demo_snakemake as snakemake
from support import REPO, require_mirror

from imhibench.common.io import read_provenance

pytestmark = pytest.mark.slow


def test_wrong_sha256_stops_fetch_with_a_clear_error(tmp_path):
    mirror = require_mirror()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "imhi": {"commit": COMMIT, "source": str(mirror)},
                "dataset_catalog": {
                    "DR": {"files": {"instruction": {"path": "test_data/test_instruction/DR.csv",
                                                     "sha256": "0" * 64}}}
                },
            }
        )
    )  # fmt: skip
    target = "resources/imhi/instruction/DR.parquet"
    run = snakemake(tmp_path, "--configfile", str(bad), "--", target, timeout=300)
    assert run.returncode != 0
    log = (tmp_path / "logs" / "fetch" / "imhi" / "instruction" / "DR.log").read_text()
    assert "sha256 mismatch" in log and "expected 0000" in log
    assert not (tmp_path / target).exists()
    assert not (tmp_path / "resources" / "imhi" / "instruction" / "DR.csv").exists()


def test_fetch_checkpoint_rule_downloads_a_pinned_hub_revision(tmp_path, demo_models):
    from fake_hub import FakeHub, make_sha

    classifier = Path(demo_models["classifiers/DR"])
    files = {p.name: p.read_bytes() for p in classifier.iterdir() if p.is_file()}
    sha = make_sha("dr-classifier")
    config = tmp_path / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {"classifiers": {"DR": {"path": None, "hub_id": "Tianlin668/DR", "revision": "main"}}}
        )
    )
    target = "resources/checkpoints/Tianlin668--DR@main"
    with FakeHub({"Tianlin668/DR": {"refs": {"main": sha}, sha: files}}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        run = snakemake(tmp_path, "--configfile", str(config), "--", target, env=env)
        assert hub.unexpected == []
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((tmp_path / target / "imhibench_checkpoint.json").read_text())
    assert manifest["hub_id"] == "Tianlin668/DR" and manifest["resolved_revision"] == sha
    assert (tmp_path / target / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert (tmp_path / "logs" / "fetch" / "checkpoints" / "Tianlin668--DR@main.log").is_file()


CLP_ROWS = "query,gpt-3.5-turbo\n" + "".join(
    f'"Consider this post: post {i} Question: Does the poster suffer from depression?",'
    f'"{answer}, the poster {verb} from depression. Reasoning: reason {i}."\n'
    for i, (answer, verb) in enumerate([("Yes", "suffers"), ("No", "does not suffer")] * 2)
)


def test_local_test_file_is_fetched_and_is_an_input(tmp_path):
    """The README's route for CLP: a file of one's own, by a path relative to the workdir."""
    (tmp_path / "my_data").mkdir()
    (tmp_path / "my_data" / "CLP.csv").write_text(CLP_ROWS)
    config = tmp_path / "clp.yaml"
    config.write_text(
        yaml.safe_dump(
            {"dataset_catalog": {"CLP": {"files": {"instruction": {
                "local_path": "my_data/CLP.csv", "sha256": None}}}}}
        )
    )  # fmt: skip
    target = "resources/imhi/instruction/CLP.parquet"
    run = snakemake(tmp_path, "--configfile", str(config), "--", target, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_parquet(tmp_path / target)
    assert table["row_id"].tolist() == [f"CLP-{i:05d}" for i in range(4)]
    assert table["gold_label"].tolist() == ["yes", "no", "yes", "no"]
    provenance = read_provenance(tmp_path / target)
    assert provenance["source"] == str(tmp_path / "my_data" / "CLP.csv")
    assert provenance["sha256_pinned"] is False
    # Replacing the user's file reruns the fetch (it is a rule input).
    (tmp_path / "my_data" / "CLP.csv").write_text(CLP_ROWS.replace("reason 0", "new reason"))
    dry = snakemake(tmp_path, "--configfile", str(config), "--dry-run", "--", target)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "fetch_test_set" in dry.stdout + dry.stderr


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_orphaned_generate_job_loses_no_row(tmp_path, demo_models):
    """`snakemake` killed (-9) while a generate job runs: the orphaned job finishes, but its output
    stays marked incomplete. `--rerun-incomplete` deletes that output; the rerun rebuilds it from
    the shards the job left, without generating a row."""
    import signal
    import time

    mirror = require_mirror()
    config = tmp_path / "orphan.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": ["demo-llama"], "datasets": ["DR"], "rows_per_dataset": 400,
                "imhi": {"commit": COMMIT, "source": str(mirror)},
                "generation": {"max_new_tokens": 24, "shard_rows": 8},
                "model_catalog": {"demo-llama": {"path": demo_models["causal"]}},
            }
        )
    )  # fmt: skip
    target = "results/generate/demo-llama/DR.parquet"
    out, shards = tmp_path / target, tmp_path / f"{target}.shards"
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path), "--cores", "1",
        "--configfile", str(REPO / "workflow_config" / "demo.yaml"), str(config), "--", target,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with (tmp_path / "snakemake1.log").open("w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while not list(shards.glob("shard-*.parquet")):
        assert first.poll() is None, (tmp_path / "snakemake1.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no shard after 300 s"
        time.sleep(0.05)
    job = _descendants(first.pid)
    first.send_signal(signal.SIGKILL)  # the login session is lost
    first.wait()
    while any(Path(f"/proc/{pid}").exists() for pid in job):  # the orphan runs to its end
        assert time.monotonic() < deadline + 300, "the orphaned job did not finish"
        time.sleep(0.2)
    assert out.is_file(), (tmp_path / "logs/generate/demo-llama/DR.log").read_text()[-3000:]
    orphan_output = pd.read_parquet(out)
    assert list((tmp_path / ".snakemake" / "incomplete").iterdir())  # still marked

    unlock = subprocess.run([*command[:-2], "--unlock"], capture_output=True, text=True, env=env)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    rerun = subprocess.run(
        [*command[:-2], "--rerun-incomplete", "--", target],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "generate" in rerun.stdout + rerun.stderr  # the job did run again ...
    provenance = read_provenance(out)
    assert (
        provenance["generated_rows"] == 0 and provenance["resumed_rows"] == 400
    )  # ... from shards
    pd.testing.assert_frame_equal(pd.read_parquet(out), orphan_output)
