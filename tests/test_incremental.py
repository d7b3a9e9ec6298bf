"""Incremental reruns: after a finished run, a config change reruns exactly the jobs it affects
(read from `snakemake --dry-run`'s job list), and a change that cannot alter a number (the
cluster resources, the IMHI mirror) reruns nothing. The finished run is the session's demo run
(conftest.py `demo_run`), read-only here: dry runs, and one real run on a copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from demo_commands import run, snakemake_command, write_config
from support import REPO, copy_run

from imhibench.fetch.scorer_weights import source_key

pytestmark = pytest.mark.slow
# The demo's models whose answers are generated (the tiny models), and the imported answers.
GENERATED = ("demo-llama", "demo-llama-lora", "demo-bart", "demo-t5")
IMPORTED = "MentaLLaMA-examples"
MODELS = (*GENERATED, IMPORTED)
DEMO_CONFIG = yaml.safe_load((REPO / "workflow_config" / "demo.yaml").read_text())


@pytest.fixture(scope="module")
def demo(finished_demo):
    return finished_demo  # conftest.py: the session's demo run, read-only here (dry runs)


def answered(demo, model: str) -> list[str]:
    """The test sets `model` answered in the demo run."""
    return sorted(p.stem for p in (demo[0] / "results" / "generate" / model).glob("*.parquet"))


def cells(demo, *models: str) -> list[tuple[str, str]]:
    return [(model, dataset) for model in models for dataset in answered(demo, model)]


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


def test_new_max_new_tokens_reruns_generation_not_the_imported_answers(demo, tmp_path):
    """No decoding setting applies to imported answers: their jobs (and the GPTScore and judge
    jobs scoring them, paid when asked through an API) stay."""
    change = {"generation": {"max_new_tokens": 8}}
    assert planned_jobs(demo, tmp_path, change) == stages(*cells(demo, *GENERATED)) | TABLES


def test_new_revision_of_one_model_reruns_only_its_jobs(demo, tmp_path):
    change = {"model_catalog": {"demo-llama": {"revision": "v2"}}}
    expected = stages(*cells(demo, "demo-llama")) | TABLES
    assert planned_jobs(demo, tmp_path, change) == expected


def test_new_decoding_settings_of_one_model_rerun_only_its_jobs(demo, tmp_path):
    change = {"model_catalog": {"demo-bart": {"generation": {"max_new_tokens": 8}}}}
    expected = stages(*cells(demo, "demo-bart")) | TABLES
    assert planned_jobs(demo, tmp_path, change) == expected


def test_new_dataset_runs_only_its_jobs(demo, tmp_path):
    """A new dataset generates only its own answers; each model's label and score job runs
    again but computes only the new dataset: the others are copied from results/.reuse, byte
    for byte (a real run on a copy of the finished demo). demo-llama lists the test sets it
    answers (demo.yaml): t-sid is added there too, which reruns none of its other jobs; demo-t5
    gets a list without it (two models answer t-sid here, enough to show it)."""
    models = ("demo-llama", "demo-bart")
    llama = [*DEMO_CONFIG["model_catalog"]["demo-llama"]["datasets"], "t-sid"]
    change = {"datasets": [*DEMO_CONFIG["datasets"], "t-sid"],
              "model_catalog": {"demo-llama": {"datasets": llama},
                                "demo-t5": {"datasets": answered(demo, "demo-t5")}}}  # fmt: skip
    fetches = {("fetch_test_set", split, "t-sid") for split in ("instruction", "completion")}
    expected = stages(*((m, "t-sid") for m in models)) | fetches | TABLES
    assert planned_jobs(demo, tmp_path, change) == expected

    workdir, config = demo
    copy = copy_run(workdir, tmp_path / "work")  # the shared run stays as it is
    changed = write_config(tmp_path / "change.yaml", change)
    # up to the score jobs: the tables after them are planned above (TABLES)
    until = ("--until", "score")
    result = run(snakemake_command(copy, "--cores", "2", *until, configs=(config, changed)))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for stage, folders in (("label", ["label"]), ("score", ["score", "metrics"])):
        for model in models:
            log = (copy / "logs" / stage / f"{model}.log").read_text()
            done = dict(re.findall(r": (\S+): (reused|computed) ", log))
            before = answered(demo, model)
            assert done == {**dict.fromkeys(before, "reused"), "t-sid": "computed"}, log
            for folder, dataset in ((f, d) for f in folders for d in before):
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


def test_new_judge_setting_reruns_only_its_jobs(demo, tmp_path):
    """A model metric's option change reruns its jobs: over the answers it scores (the real
    answers on DR-expert in the demo), then that model's summary, and over the rated
    explanations, then the validation's merge; no other model's job."""
    change = {"scorers": {"llm_judge": {"max_new_tokens": 16}}}
    judged = {
        ("score_metric", "llm_judge", IMPORTED, "DR-expert"),
        ("score_metric", "llm_judge", "_human_ratings", "rated_explanations"),
    }
    expected = judged | model_jobs(IMPORTED, rules=("score", "answer_sample"))
    assert planned_jobs(demo, tmp_path, change) == expected | TABLES | VALIDATION
