"""The whole demo (workflow_config/demo.yaml) through `snakemake`, on the real IMHI rows served by a
loopback HTTP server (the same download and checksum code as the real GitHub URL): one run per
session (conftest.py's `demo_run`), read by every test here; a test that reruns jobs works on a
copy. Other end-to-end runs of the workflow: test_workflow.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from demo_commands import COMMIT
from demo_commands import demo_snakemake as snakemake
from support import REPO, copy_run

from imhibench.common.io import read_provenance

pytestmark = pytest.mark.slow
DEMO = yaml.safe_load((REPO / "workflow_config" / "demo.yaml").read_text())


def test_every_table_exists_with_models_as_rows_and_test_sets_as_columns(demo_run):
    workdir, _ = demo_run
    tables = workdir / "results" / "tables"
    main = ["DR", "SAD"]  # the paper's column order
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
    """GPTScore and the LLM judge score the real answers of DR-expert only in the demo: one
    column per table, and no row for the tiny models (`models`), whose DR-expert answers the
    other tables show."""
    tables = workdir / "results" / "tables"
    models = ["MentaLLaMA-examples"]
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
    assert len(unparsed) == 1  # counted per (model, DR-expert), never silently 0
    tiny = pd.read_parquet(workdir / "results/score/demo-llama/DR-expert.parquet")
    assert not {"gpt_score", "llm_judge_overall"} & set(tiny.columns)


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
                 "confusion/MentaLLaMA-examples/SAD-expert", "confusion/demo-t5/SAD"):  # fmt: skip
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
    summary = pd.read_parquet(workdir / "results" / "metrics" / "demo-t5" / "SAD.parquet")
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
    # instruction models x3 (2 main + DR-expert), completion models x2, the real answers x5
    assert len(sidecar["inputs"]) == 2 * 3 + 2 * 2 + 5


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
        # the plots (drawn from the tables) are left out: test_plots_exist_for_every_table_and_job
        run = snakemake(
            workdir, "--config", f"published_weighted_f1={published}", "--omit-from", "plots"
        )
        assert run.returncode == 0, run.stderr[-3000:]
        # the demo labels with the rule labeler, so the published (MentalBERT) row says so
        row = f"| MentaLLaMA-chat-7B (published only, MentalBERT labels) | {value} |"
        assert row in table.read_text()
