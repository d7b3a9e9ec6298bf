"""End to end: the demo DAG through `snakemake` in a subprocess, on the real IMHI rows, served by a
loopback HTTP server (the same download and checksum code as the real GitHub URL)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from small_demo import DEMO_RATINGS
from support import REPO, copy_run, require_mirror

from imhibench.common.io import read_provenance

pytestmark = pytest.mark.slow
COMMIT = "42cd29dfb91092843daae53ec162c75605d753ff"
DEMO = yaml.safe_load((REPO / "workflow_config" / "demo.yaml").read_text())


def snakemake(
    workdir: Path, *args: str, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2",
        "--configfile", str(REPO / "workflow_config" / "demo.yaml"), str(DEMO_RATINGS), *args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_every_table_exists_with_models_as_rows_and_test_sets_as_columns(demo_run):
    workdir, _ = demo_run
    tables = workdir / "results" / "tables"
    main = ["DR", "t-sid", "SAD", "CAMS"]  # the paper's column order
    expert = [d for d in DEMO["datasets"] if d.endswith("-expert")]
    demo_models = [m for m in DEMO["models"] if m.startswith("demo-")]
    # models without a job in a table's test sets have no row there (no expert completion split)
    expert_models = ["demo-llama", "demo-llama-lora", "MentaLLaMA-examples"]
    answered = {"demo-llama": ["DR-expert"], "demo-llama-lora": ["DR-expert"]}
    for name, columns, models in [
        ("weighted_f1", main, demo_models), ("bart_score", main, demo_models),
        ("expert_weighted_f1", expert, expert_models),
        ("expert_bart_score", expert, expert_models),
    ]:  # fmt: skip
        table = pd.read_parquet(tables / f"{name}.parquet")
        assert [c for c in table.columns if c in DEMO["datasets"]] == columns
        reproduced = table[table["status"] == "reproduced"].set_index("model")
        assert reproduced.index.tolist() == models
        for ext in ("md", "html", "tex"):
            assert all(m in (tables / f"{name}.{ext}").read_text() for m in models)
        values = reproduced[columns]
        expert_answered = answered if name.startswith("expert") else {}
        # the random models answer one expert set only; every other cell holds a number
        expected = pd.DataFrame(
            {c: [c in expert_answered.get(m, columns) for m in values.index] for c in columns},
            index=values.index,
        )
        assert values.notna().equals(expected), f"{name} has wrong missing cells:\n{table}"
        cells = values.stack().dropna()
        if name.endswith("weighted_f1"):
            assert cells.between(0, 100).all()
            lows = reproduced[[f"{c}_ci_low" for c in columns]].set_axis(columns, axis=1)
            highs = reproduced[[f"{c}_ci_high" for c in columns]].set_axis(columns, axis=1)
            lows, highs = lows.stack().loc[cells.index], highs.stack().loc[cells.index]
            assert (lows <= cells).all() and (cells <= highs).all()
        else:  # BART-score is a mean log-likelihood: finite and negative
            assert cells.map(lambda v: math.isfinite(v) and v < 0).all()
            # the demo scores with its random stand-in for ParaBank2's bart_score.pth, and no
            # ParaBank2 digest is recorded: the variant is named by the file's digest
            sidecar = json.loads((tables / "provenance.json").read_text())
            loaded = {r["bart_score_weights"]["sha256"] for r in sidecar["inputs"].values()}
            assert len(loaded) == 1
            variant = f"bart-score + unidentified weights file {loaded.pop()[:12]}"
            markdown = (tables / f"{name}.md").read_text()
            assert markdown.startswith("## ") and f"[{variant}]" in markdown.splitlines()[0]
            assert "ParaBank2" not in markdown.splitlines()[0]
            assert read_provenance(tables / f"{name}.parquet")["bart_score_variant"] == variant
        # the demo's tiny models are marked, with the rows behind every cell
        markdown = (tables / f"{name}.md").read_text()
        assert all(f"| {m} (random weights) |" in markdown for m in models if "demo-" in m)
        assert "- Rows per cell: " in markdown
    # the main weighted-F1 table shows the paper's rows, published only
    f1 = pd.read_parquet(tables / "weighted_f1.parquet")
    assert f1.loc[f1["status"] == "published only", "model"].tolist()[:2] == [
        "MentalRoBERTa", "ChatGPT zero-shot",
    ]  # fmt: skip
    for paired in ("weighted_f1_paired", "expert_weighted_f1_paired"):
        assert len(pd.read_parquet(tables / f"{paired}.parquet")) > 0


def check_model_metric_tables(workdir: Path) -> None:
    """GPTScore and the LLM judge score DR-expert only in the demo: one column per table."""
    tables = workdir / "results" / "tables"
    models = ["demo-llama", "demo-llama-lora", "MentaLLaMA-examples"]
    assert not (tables / "gpt_score.parquet").exists()  # no main test set is scored
    gpt = pd.read_parquet(tables / "expert_gpt_score.parquet").set_index("model")
    assert gpt.index.tolist() == models
    assert gpt["DR-expert"].map(lambda v: math.isfinite(v) and v < 0).all()
    assert "[causal (hf, clean arithmetic)]" in (tables / "expert_gpt_score.md").read_text()
    judge = pd.read_parquet(tables / "expert_llm_judge.parquet").set_index("model")
    assert judge.index.tolist() == models
    markdown = (tables / "expert_llm_judge.md").read_text()
    assert "LLM judge" in markdown and "Judge rubric" in markdown and "never parsed" in markdown
    rows = pd.read_parquet(workdir / "results/score/MentaLLaMA-examples/DR-expert.parquet")
    assert len(rows) == 35 and rows["gpt_score"].notna().all()
    assert {"llm_judge_overall", "bart_score"} <= set(rows.columns)
    metrics = pd.read_parquet(tables / "all_metrics.parquet")
    unparsed = metrics[metrics["metric"] == "llm_judge_unparsed"]
    assert len(unparsed) == 3  # counted per (model, DR-expert), never silently 0


def test_gpt_score_and_llm_judge_tables(demo_run):
    check_model_metric_tables(demo_run[0])


def test_the_real_answers_are_scored_on_all_35_rows(demo_run):
    workdir, _ = demo_run
    for dataset in [d for d in DEMO["datasets"] if d.endswith("-expert")]:
        labels = pd.read_parquet(
            workdir / "results/label/MentaLLaMA-examples" / f"{dataset}.parquet"
        )
        assert len(labels) == 35 and labels["label_rule"].notna().all()
    page = (workdir / "results/samples/MentaLLaMA-examples/DR-expert.html").read_text()
    assert "35 rows" in page and "Reasoning" in page


def test_plots_exist_for_every_table_and_job(demo_run):
    workdir, _ = demo_run
    plots = workdir / "results" / "plots"
    for name in ("weighted_f1", "expert_bart_score", "labelers",
                 "confusion/MentaLLaMA-examples/SAD-expert", "confusion/demo-t5/CAMS"):  # fmt: skip
        for ext in ("png", "svg"):
            assert (plots / f"{name}.{ext}").stat().st_size > 1000


def test_every_row_id_flows_through_every_stage(demo_run):
    workdir, _ = demo_run
    rows = DEMO["rows_per_dataset"]
    for model in [m for m in DEMO["models"] if m.startswith("demo-")]:
        for stage in ("generate", "label", "score"):
            table = pd.read_parquet(workdir / "results" / stage / model / "DR.parquet")
            assert table["row_id"].tolist() == [f"DR-{i:05d}" for i in range(rows)]
    labels = pd.read_parquet(workdir / "results" / "label" / "demo-llama" / "SAD.parquet")
    assert set(labels["label_mentalbert"]) <= {
        "school", "financial problem", "family issues", "social relationships", "work",
        "health issues", "emotional turmoil", "everyday decision making", "other causes",
    }  # fmt: skip
    summary = pd.read_parquet(workdir / "results" / "metrics" / "demo-t5" / "CAMS.parquet")
    metrics = set(summary["metric"])
    assert {"accuracy", "weighted_f1", "micro_f1", "macro_f1", "ood", "bart_score"} <= metrics
    assert {"bert_score_f1", "rouge1", "rouge2", "rougeL", "bleu"} <= metrics


def test_logs_benchmarks_and_provenance(demo_run):
    workdir, _ = demo_run
    assert (workdir / "logs" / "generate" / "demo-llama" / "DR.log").stat().st_size > 0
    assert (workdir / "benchmarks" / "score" / "demo-bart.tsv").is_file()
    # one label and one score job per model, one line per dataset
    datasets = DEMO["model_catalog"]["demo-llama"]["datasets"]
    for stage in ("label", "score"):
        log = (workdir / "logs" / stage / "demo-llama.log").read_text()
        assert sorted(re.findall(r": (\S+): computed ", log)) == sorted(datasets), log
    generation = read_provenance(
        workdir / "results" / "generate" / "demo-llama-lora" / "DR.parquet"
    )
    assert generation["kind"] == "lora" and generation["checkpoints"]["base"]["local_path"]
    assert generation["test_set"]["sha256"] == (
        "20a9edab07c4f3888ec6536779465be20b96683e7d5bbdedfb763d6f791a485a"
    )
    assert generation["generation_settings"]["max_new_tokens"] == 16
    # Each generate job left its shards: they stay, so that a rerun (--forceall, a re-fetch)
    # rebuilds the output from them.
    assert generation["resume_key_sha256"] and generation["generated_rows"] == 4
    assert (workdir / "results/generate/demo-llama-lora/DR.parquet.shards/manifest.json").is_file()
    assert generation["packages"]["torch"]
    sidecar = json.loads((workdir / "results" / "tables" / "provenance.json").read_text())
    # instruction models x5 (4 main + DR-expert), completion models x4, the real answers x5
    assert len(sidecar["inputs"]) == 2 * 5 + 2 * 4 + 5


def test_rerun_with_nothing_changed_runs_nothing(demo_run):
    workdir, _ = demo_run
    # another mirror of the same checksummed files is no change either
    run = snakemake(workdir, "--dry-run", "--config", f"imhi={{commit: {COMMIT}, source: x}}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Nothing to be done" in run.stdout + run.stderr


def test_replacing_the_published_numbers_reruns_aggregate(demo_run, tmp_path):
    workdir = copy_run(demo_run[0], tmp_path / "demo")  # the shared run stays as it is
    published = tmp_path / "published.csv"
    published.write_text("model,DR\nMentaLLaMA-chat-7B,83.95\n")
    table = workdir / "results" / "tables" / "weighted_f1.md"
    for value in ("83.95", "77.77"):
        published.write_text(f"model,DR\nMentaLLaMA-chat-7B,{value}\n")
        run = snakemake(workdir, "--config", f"published_weighted_f1={published}")
        assert run.returncode == 0, run.stderr[-3000:]
        # the demo labels with the rule labeler, so the published (MentalBERT) row says so
        row = f"| MentaLLaMA-chat-7B (published only, MentalBERT labels) | {value} |"
        assert row in table.read_text()


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
