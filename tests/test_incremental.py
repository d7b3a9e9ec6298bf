"""Incremental reruns: after a finished run, a config change reruns exactly the jobs it affects
(read from `snakemake --dry-run`'s job list), and a change that cannot alter a number (the
cluster resources, the IMHI mirror) reruns nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from small_demo import run, snakemake_command, write_config
from support import copy_run

from imhibench.fetch.scorer_weights import source_key

pytestmark = pytest.mark.slow
MODELS, DATASETS = ("demo-llama", "demo-bart"), ("DR", "SAD")


@pytest.fixture(scope="module")
def demo(small_demo):
    return small_demo  # conftest.py: one run per session, read-only here (dry runs)


def planned_jobs(demo, tmp_path, change: dict | None = None) -> set[tuple[str, ...]]:
    """(rule, *wildcard values) of every job a dry run with `change` on top plans, minus `all`."""
    workdir, config = demo
    configs = (config, write_config(tmp_path / "change.yaml", change)) if change else (config,)
    result = run(snakemake_command(workdir, "--dry-run", "--cores", "2", configs=configs))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs: list[list[str]] = []
    for line in output.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            jobs.append([match[1]])
        elif (match := re.fullmatch(r"\s+wildcards: (.+)", line)) and jobs:
            jobs[-1] += [item.split("=", 1)[1] for item in match[1].split(", ")]
    planned = {tuple(job) for job in jobs if job[0] != "all"}
    if not planned:
        assert "Nothing to be done" in output
    return planned


# Whatever changes a number reruns the tables and the figures made from them.
TABLES = {("aggregate",), ("plots",)}


# Jobs of one model over all its datasets.
MODEL_RULES = ("label", "score", "answer_sample")


def model_jobs(*models: str, rules=MODEL_RULES) -> set[tuple[str, ...]]:
    return {(rule, model) for rule in rules for model in models}


def stages(*cells: tuple[str, str]) -> set[tuple[str, ...]]:
    """The jobs of `cells`: generate per (model, dataset); label, score and the answer pages
    once per model of the cells."""
    return {("generate", *cell) for cell in cells} | model_jobs(*{m for m, _ in cells})


def test_nothing_changed_runs_nothing(demo, tmp_path):
    assert planned_jobs(demo, tmp_path) == set()


@pytest.mark.parametrize(
    "change",
    [
        {"model_catalog": {"demo-llama": {"resources": {"mem_mb": 9000, "runtime": 99}}}},
        {"stage_resources": {"score": {"gpu": 1, "cpus": 2, "mem_mb": 100, "runtime": 1}}},
        {"stage_resources": {
            "validate_metrics": {"gpu": 1, "cpus": 2, "mem_mb": 100, "runtime": 1},
        }},
        {"imhi": {"source": "https://mirror.invalid/imhi"}},
        {"generation": {"shard_rows": 1, "batch_tokens": 512, "max_batch_size": 1}},
        {"model_catalog": {"demo-bart": {"generation": {"shard_rows": 3, "batch_tokens": 999}}}},
        {"device": "auto"},
    ],
    ids=[
        "model-resources", "stage-resources", "validation-resources", "imhi-mirror",
        "execution-settings",
        "model-execution-settings", "device",
    ],
)  # fmt: skip
def test_changes_that_cannot_alter_a_number_run_nothing(demo, tmp_path, change):
    assert planned_jobs(demo, tmp_path, change) == set()


def test_new_max_new_tokens_reruns_generation(demo, tmp_path):
    change = {"generation": {"max_new_tokens": 8}}
    cells = [(m, d) for m in MODELS for d in DATASETS]
    assert planned_jobs(demo, tmp_path, change) == stages(*cells) | TABLES


def test_new_revision_of_one_model_reruns_only_its_jobs(demo, tmp_path):
    change = {"model_catalog": {"demo-llama": {"revision": "v2"}}}
    expected = stages(*(("demo-llama", d) for d in DATASETS)) | TABLES
    assert planned_jobs(demo, tmp_path, change) == expected


def test_new_decoding_settings_of_one_model_rerun_only_its_jobs(demo, tmp_path):
    change = {"model_catalog": {"demo-bart": {"generation": {"max_new_tokens": 8}}}}
    expected = stages(*(("demo-bart", d) for d in DATASETS)) | TABLES
    assert planned_jobs(demo, tmp_path, change) == expected


def test_new_dataset_runs_only_its_jobs(demo, tmp_path):
    """A new dataset generates only its own answers; each model's label and score job runs
    again but computes only the new dataset: the others are copied from results/.reuse, byte
    for byte (a real run on a copy of the finished demo). demo-llama lists the test sets it
    answers (demo.yaml): t-sid is added there too, which reruns none of its other jobs."""
    answered = [*DATASETS, "DR-expert", "t-sid"]
    change = {"datasets": [*DATASETS, "t-sid"],
              "model_catalog": {"demo-llama": {"datasets": answered}}}  # fmt: skip
    fetches = {("fetch_test_set", split, "t-sid") for split in ("instruction", "completion")}
    expected = stages(*((m, "t-sid") for m in MODELS)) | fetches | TABLES
    assert planned_jobs(demo, tmp_path, change) == expected

    workdir, config = demo
    copy = copy_run(workdir, tmp_path / "work")  # the shared run stays as it is
    changed = write_config(tmp_path / "change.yaml", change)
    # up to the score jobs: the tables after them are planned above (TABLES)
    until = ("--until", "score")
    result = run(snakemake_command(copy, "--cores", "2", *until, configs=(config, changed)))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for stage, folders in (("label", ["label"]), ("score", ["score", "metrics"])):
        for model in MODELS:
            log = (copy / "logs" / stage / f"{model}.log").read_text()
            done = dict(re.findall(r": (\S+): (reused|computed) ", log))
            assert done == {"DR": "reused", "SAD": "reused", "t-sid": "computed"}, log
            for folder, dataset in ((f, d) for f in folders for d in DATASETS):
                path = Path("results", folder, model, f"{dataset}.parquet")
                assert (copy / path).read_bytes() == (workdir / path).read_bytes(), path


# The metric validation scores upstream's rated explanations with the scorers: a scorer change
# reruns it; a model change (above) does not.
VALIDATION = {("validate_metrics",)}


def test_new_scorer_setting_reruns_only_scoring(demo, tmp_path):
    change = {"scorers": {"bert_score": {"num_layers": 5}}}
    expected = model_jobs(*MODELS, rules=("score", "answer_sample")) | TABLES
    assert planned_jobs(demo, tmp_path, change) == expected | VALIDATION


def test_new_bootstrap_resamples_rerun_only_the_validation(demo, tmp_path):
    change = {"metric_validation": {"bootstrap_resamples": 99}}
    assert planned_jobs(demo, tmp_path, change) == VALIDATION


def test_another_published_file_reruns_only_the_tables(demo, tmp_path):
    published = tmp_path / "published.csv"
    published.write_text("model,DR,SAD\nSomeone else,50.0,40.0\n")
    assert planned_jobs(demo, tmp_path, {"published_weighted_f1": str(published)}) == TABLES


def test_new_bart_score_weights_file_refetches_it_and_reruns_only_scoring(demo, tmp_path):
    other = tmp_path / "other-bart-score.pth"
    other.write_bytes(b"another weights file")  # a dry run: the file is never loaded
    change = {"scorers": {"bart_score": {"weights_file": {"local_path": str(other)}}}}
    expected = model_jobs(*MODELS, rules=("score", "answer_sample"))
    folder = source_key({"local_path": str(other)})  # a folder of its own, beside the demo's
    assert planned_jobs(demo, tmp_path, change) == expected | TABLES | VALIDATION | {
        ("fetch_bart_score_weights", folder),
    }  # fmt: skip


def test_new_judge_setting_reruns_its_validation_job_not_the_models(demo, tmp_path):
    """A model metric's option change reruns its job over the rated explanations and the
    validation's merge; no model's job (the judge scores only DR-expert in the demo)."""
    change = {"scorers": {"llm_judge": {"max_new_tokens": 16}}}
    judged = ("score_metric", "llm_judge", "_human_ratings", "rated_explanations")
    planned = planned_jobs(demo, tmp_path, change)
    assert planned - TABLES == {judged} | VALIDATION
