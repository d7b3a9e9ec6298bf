import re
import sys
from pathlib import Path

# Rules and scripts use the imhibench package that ships with this workflow.
sys.path.insert(0, workflow.basedir)

import imhibench.validate_metrics.ratings as validation_ratings
import imhibench.validate_metrics.tables as validation_tables
from imhibench.aggregate.specs import paired_table_names, table_specs
from imhibench.common.execution import answer_model_spec, is_imported
from imhibench.common.execution import model_answer_settings
from imhibench.common.reuse import REUSE_ROOT
from imhibench.common.tasks import all_tasks
from imhibench.config.fingerprint import check_tables_match_config
from imhibench.config.paths import RATED_EXPLANATIONS, VALIDATION_JOB, checkpoint_dir
from imhibench.config.plan import Plan
from imhibench.config.validation import stop_on_error, validate_config
from imhibench.fetch.scorer_weights import WEIGHTS_PATTERN as BART_SCORE_WEIGHTS
from imhibench.fetch.scorer_weights import check_pin_against_lock, source_key

# A bad config stops here with its message alone (no traceback).
stop_on_error(
    validate_config, config, Path(workflow.basedir) / "workflow_config" / "schema.yaml"
)
PLAN = stop_on_error(Plan, config)
# A sha256 pinned for the BARTScore weights must be the one their first fetch recorded.
stop_on_error(
    check_pin_against_lock, PLAN.bart_score_weights(), PLAN.bart_score_weights_path()
)
ALL_TASKS_BY_NAME = all_tasks()
ALL_TASKS = list(ALL_TASKS_BY_NAME)
for message in PLAN.skip_messages():
    logger.warning(f"imhi-bench: {message}")


def get_report_requested():
    """Whether this is `snakemake --report ...` (Snakemake tells the Snakefile nothing else)."""
    return any(arg == "--report" or arg.startswith("--report=") for arg in sys.argv)


# A report must not present tables made with another config as this config's.
if get_report_requested():
    stop_on_error(check_tables_match_config, "results/tables", config)


def get_table_scorers(wildcards):
    """Per table group, the scorers with a table there (Plan.scorers_of_group)."""
    return {g: PLAN.scorers_of_group(g) for g in ("main", "expert")}


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


wildcard_constraints:
    model=_alternatives(PLAN.models),
    dataset=_alternatives(PLAN.datasets),
    split="instruction|completion",
    checkpoint=_alternatives(PLAN.hub_checkpoints()),
    rating_file=_alternatives(PLAN.rating_files()),


SCRIPTS = Path(workflow.basedir) / "scripts"
# Nodes of every submitted job: each is one process, so all of its GPUs must be on one node
# (the `gpu` resource becomes `sbatch --gpus=N`, a job-wide total that SLURM may spread over
# several nodes; the process would then see only its own node's GPUs).
JOB_NODES = 1
TABLE_GROUPS = [g for g in ("main", "expert") if PLAN.table_datasets(g)]
TABLES = table_specs(config["labelers"][0], get_table_scorers(None), TABLE_GROUPS)
PAIRED_TABLES = paired_table_names(TABLE_GROUPS)
TABLE_FORMATS = ("parquet", "md", "html", "tex")


def get_final_outputs():
    outputs = get_table_outputs() + get_plot_paths() + get_sample_outputs()
    validated = PLAN.rating_files() and config["scorers"]  # rating files and a metric
    return outputs + (get_validation_paths() if validated else [])


def get_sample_outputs():
    """One folder of answer pages per model with jobs, a page per dataset, worst-scoring
    first (in `--report`)."""
    return [f"results/samples/{m}" for m in PLAN.models_with_jobs()]


def get_table_outputs():
    table_names = [spec.name for spec in TABLES] + PAIRED_TABLES
    names = [f"{name}.{ext}" for name in table_names for ext in TABLE_FORMATS]
    return [f"results/tables/{n}" for n in names] + [
        "results/tables/all_metrics.parquet",
        "results/tables/provenance.json",
    ]


def get_report_outputs():
    """The aggregate's outputs; the HTML tables and the provenance go into `--report`."""
    group_names = {"main": "IMHI test sets", "expert": "Expert-written sets"}
    subcategory = {
        f"results/tables/{s.name}.html": group_names[s.group] for s in TABLES
    }
    for group, name in zip(TABLE_GROUPS, PAIRED_TABLES):
        subcategory[f"results/tables/{name}.html"] = group_names[group]
    outputs = []
    for path in get_table_outputs():
        if path in subcategory:
            metric = Path(path).stem.removeprefix("expert_")
            path = report(
                path,
                caption=f"../report/{metric}.rst",
                category="Tables",
                subcategory=subcategory[path],
            )
        elif path.endswith("provenance.json"):
            path = report(
                path, caption="../report/provenance.rst", category="Provenance"
            )
        outputs.append(path)
    return outputs


def get_plot_names():
    """Figures (without extension) under results/plots, by report subcategory."""
    names = {"Tables": [spec.name for spec in TABLES]}
    if {"mentalbert", "rule"} <= set(config["labelers"]):
        names["Labelers"] = ["labelers"]
    names["Confusion matrices"] = [f"confusion/{m}/{d}" for m, d in PLAN.jobs]
    return names


def get_plot_paths():
    return [
        f"results/plots/{name}.{ext}"
        for names in get_plot_names().values()
        for name in names
        for ext in ("png", "svg")
    ]


def get_plot_outputs():
    """Every figure as PNG (in `--report`) and SVG; for rule plots (captions are relative to
    the rules/ directory)."""
    captions = {
        "Tables": "../report/plot_table.rst",
        "Labelers": "../report/plot_labelers.rst",
        "Confusion matrices": "../report/plot_confusion.rst",
    }
    outputs = []
    for subcategory, names in get_plot_names().items():
        for name in names:
            png = report(
                f"results/plots/{name}.png",
                caption=captions[subcategory],
                category="Plots",
                subcategory=subcategory,
            )
            outputs += [png, f"results/plots/{name}.svg"]
    return outputs


# ---- fetch -------------------------------------------------------------------------------


def get_test_file_sha256(wildcards):
    return PLAN.test_file(wildcards.dataset, wildcards.split)["sha256"]


def get_local_test_file(wildcards):
    """A user's own test file (`local_path`, relative to the working directory) is an input:
    replacing it refetches and reruns what depends on it."""
    spec = PLAN.test_file(wildcards.dataset, wildcards.split)
    return {"local": spec["local_path"]} if "local_path" in spec else {}


def get_task_name(wildcards):
    return PLAN.task_of(wildcards.dataset)


def get_checkpoint_spec(wildcards):
    return PLAN.hub_checkpoints()[wildcards.checkpoint]


def get_bart_score_weights_source(wildcards):
    """The weights file's source without its sha256: pinning a fetched digest refetches
    nothing (the script reads the pin from the config)."""
    spec = PLAN.bart_score_weights()
    return {key: value for key, value in spec.items() if key != "sha256" and value}


def get_bart_score_weights_folders():
    """Wildcard constraint: the one source folder (scorer_weights.source_key) of this config."""
    spec = PLAN.bart_score_weights()
    return _alternatives([source_key(spec)] if spec else [])


def get_bart_score_weights_local(wildcards):
    """A local weights file is an input (so a demo-built one is made first)."""
    spec = PLAN.bart_score_weights() or {}
    return [spec["local_path"]] if spec.get("local_path") else []


# ---- generate ----------------------------------------------------------------------------


def get_test_set(wildcards):
    return PLAN.test_set_path(wildcards.dataset, PLAN.split_of(wildcards.model))


def get_generate_input(wildcards):
    inputs = {"test_set": get_test_set(wildcards)}
    spec = PLAN.model(wildcards.model)
    if is_imported(spec):
        inputs["responses"] = spec["responses"].format(dataset=wildcards.dataset)
    for role, checkpoint in PLAN.model_checkpoints(wildcards.model).items():
        inputs[role] = checkpoint_dir(checkpoint)
    return inputs


def get_generate_models(rule_name):
    """Wildcard constraint: the models whose answers `rule_name` generates."""
    return _alternatives(PLAN.models_of_generate_rule(rule_name))


def get_model_spec(wildcards):
    """The answer-affecting part of the model's entry (no resources, placement, `generation`
    or API request/cost settings): changing those alone must not trigger a rerun."""
    return answer_model_spec(PLAN.model(wildcards.model))


def get_generation_rows(wildcards):
    return PLAN.rows_of(wildcards.model)


def get_example_responses_sha256(wildcards):
    return config["imhi_example_responses"][wildcards.dataset]["sha256"]


def get_generation_settings(wildcards):
    """Answer-affecting settings only (none for imported answers): execution settings
    (batching, shards) and the device are read by the script from the config, so changing them
    reruns nothing."""
    return model_answer_settings(PLAN, wildcards.model)


def get_generate_resource(name):
    def get_resource(wildcards):
        return PLAN.model(wildcards.model)["resources"][name]

    return get_resource


# ---- label and score ---------------------------------------------------------------------


def get_model_datasets(model):
    """The planned datasets of `model`, in plan order."""
    return [d for m, d in PLAN.jobs if m == model]


def get_label_jobs(wildcards):
    """One entry per dataset of the model's label job (imhibench.label.LabelJob)."""
    model = wildcards.model
    uses_classifier = "mentalbert" in config["labelers"]
    return [
        {
            "dataset": d,
            "task": PLAN.task_of(d),
            "responses": f"results/generate/{model}/{d}.parquet",
            "test_set": PLAN.test_set_path(d, PLAN.split_of(model)),
            "out": f"results/label/{model}/{d}.parquet",
            "classifier": (
                checkpoint_dir(PLAN.classifier(d)) if uses_classifier else None
            ),
        }
        for d in get_model_datasets(model)
    ]


def get_label_input(wildcards):
    jobs = get_label_jobs(wildcards)
    inputs = {
        "responses": [job["responses"] for job in jobs],
        "test_sets": [job["test_set"] for job in jobs],
    }
    if "mentalbert" in config["labelers"]:
        inputs["classifiers"] = sorted({job["classifier"] for job in jobs})
    return inputs


def get_reuse_dir(stage):
    """Where a model's `stage` job keeps its finished datasets (imhibench.common.reuse)."""

    def get_dir(wildcards):
        return f"{REUSE_ROOT}/{stage}/{wildcards.model}"

    return get_dir


def get_scorer_inputs():
    """The scorers' checkpoint directories and the BARTScore weights file (score and
    validate_metrics): a new checkpoint or weights file reruns both."""
    inputs = {name: checkpoint_dir(c) for name, c in PLAN.scorer_checkpoints().items()}
    if PLAN.bart_score_weights_path():
        inputs["bart_score_weights"] = PLAN.bart_score_weights_path()
    return inputs


def get_score_jobs(wildcards):
    """One entry per dataset of the model's score job (imhibench.score.stage.ScoreJob)."""
    model = wildcards.model
    return [
        {
            "dataset": d,
            "task": PLAN.task_of(d),
            "responses": f"results/generate/{model}/{d}.parquet",
            "labels": f"results/label/{model}/{d}.parquet",
            "test_set": PLAN.test_set_path(d, PLAN.split_of(model)),
            "rows_out": f"results/score/{model}/{d}.parquet",
            "summary_out": f"results/metrics/{model}/{d}.parquet",
            "model_metrics": PLAN.model_metric_paths(model, d),
        }
        for d in get_model_datasets(model)
    ]


def get_score_input(wildcards):
    """The model's answers, its label job's directory, the test sets, the scorers and the
    files of the model metrics' jobs that the score job merges."""
    jobs = get_score_jobs(wildcards)
    inputs = {
        "responses": [job["responses"] for job in jobs],
        "labels": f"results/label/{wildcards.model}",
        "test_sets": [job["test_set"] for job in jobs],
        "model_metrics": [p for job in jobs for p in job["model_metrics"].values()],
    }
    return inputs | get_scorer_inputs()


def get_scorer_settings(wildcards):
    return PLAN.scorer_settings()


def get_score_metrics(rule_name):
    """Wildcard pattern of the model metrics run by `rule_name`."""
    return _alternatives(PLAN.model_metrics_of_rule(rule_name))


def get_score_metric_models():
    """Wildcard pattern of the model metrics' jobs: every model, and the metric validation's
    rated explanations (VALIDATION_JOB)."""
    return _alternatives([*PLAN.models, VALIDATION_JOB[0]])


def get_score_metric_datasets():
    return _alternatives([*PLAN.datasets, VALIDATION_JOB[1]])


def get_score_metric_input(wildcards):
    """A model's answers and its test set, or for VALIDATION_JOB the rated explanations."""
    if (wildcards.model, wildcards.dataset) == VALIDATION_JOB:
        inputs = dict(RATED_EXPLANATIONS)
    else:
        inputs = {
            "responses": f"results/generate/{wildcards.model}/{wildcards.dataset}.parquet",
            "test_set": get_test_set(wildcards),
        }
    spec = PLAN.model_metric_checkpoint(wildcards.metric)
    if spec is not None:
        inputs["checkpoint"] = checkpoint_dir(spec)
    return inputs


def get_score_metric_settings(wildcards):
    return PLAN.model_metric_settings(wildcards.metric)


def get_score_metric_resource(name):
    def get_resource(wildcards):
        return config["scorers"][wildcards.metric]["resources"][name]

    return get_resource


def get_stage_resource(stage, name):
    def get_resource(wildcards):
        return config["stage_resources"][stage][name]

    return get_resource


def get_model_job_runtime(stage):
    """Minutes of a model's label or score job: the configured minutes per test set times its
    test sets (one job runs them all)."""

    def get_runtime(wildcards):
        per_set = config["stage_resources"][stage]["runtime"]
        return per_set * len(get_model_datasets(wildcards.model))

    return get_runtime


# ---- aggregate ---------------------------------------------------------------------------


def get_metrics_dirs(wildcards):
    """The score jobs' summary directories, one per model with jobs."""
    return [f"results/metrics/{m}" for m in PLAN.models_with_jobs()]


def get_metrics_files(wildcards):
    """The summary of every (model, dataset), in PLAN.jobs order."""
    return [f"results/metrics/{m}/{d}.parquet" for m, d in PLAN.jobs]


def get_label_dirs(wildcards):
    """The label jobs' directories, one per model with jobs."""
    return [f"results/label/{m}" for m in PLAN.models_with_jobs()]


def get_label_files(wildcards):
    """Per-row labels of every job, in PLAN.jobs order (paired tests, confusion matrices)."""
    return [f"results/label/{m}/{d}.parquet" for m, d in PLAN.jobs]


def get_published_file(wildcards):
    """The published weighted F1 file: the config's, else the transcription that ships."""
    return PLAN.published_file()


def get_published_names(wildcards):
    return PLAN.published_names()


def get_sample_pages(wildcards):
    """One answer page per dataset of the model: its inputs and the page's path."""
    model = wildcards.model
    return [
        {
            "dataset": d,
            "test_set": PLAN.test_set_path(d, PLAN.split_of(model)),
            "responses": f"results/generate/{model}/{d}.parquet",
            "labels": f"results/label/{model}/{d}.parquet",
            "scores": f"results/score/{model}/{d}.parquet",
            "out": f"results/samples/{model}/{d}.html",
        }
        for d in get_model_datasets(model)
    ]


def get_sample_input(wildcards):
    """A model's test sets and answers, and its label and score jobs' directories."""
    pages = get_sample_pages(wildcards)
    return {
        "test_sets": [page["test_set"] for page in pages],
        "responses": [page["responses"] for page in pages],
        "labels": f"results/label/{wildcards.model}",
        "scores": f"results/score/{wildcards.model}",
    }


def get_plot_tables(wildcards):
    return [f"results/tables/{spec.name}.parquet" for spec in TABLES]


def get_task_labels(wildcards):
    return {d: list(ALL_TASKS_BY_NAME[PLAN.task_of(d)].labels) for d in PLAN.datasets}


def get_task_names(wildcards):
    return {d: PLAN.task_of(d) for d in PLAN.datasets}


def get_table_datasets(wildcards):
    return {group: PLAN.table_datasets(group) for group in ("main", "expert")}


def get_label_dtype(wildcards):
    return config["label_dtype"]


def get_table_skips(wildcards):
    """Per table (main / expert): the skipped (dataset, models) of its datasets."""
    return {
        table: [
            message[0].upper() + message[1:] for message in PLAN.skip_messages(table)
        ]
        for table in ("main", "expert")
    }


# ---- metric validation -------------------------------------------------------------------

VALIDATION_TABLES = validation_tables.table_names()


def get_rating_file_sha256(wildcards):
    return PLAN.rating_files()[wildcards.rating_file]["sha256"]


def get_validate_metrics_input(wildcards):
    """The fetched rating files (in config order) and the scorers: no model's answers."""
    ratings = get_rated_explanations_input(wildcards)
    return (
        {"ratings": ratings} | get_scorer_inputs() | get_validation_model_metric_paths()
    )


def get_rated_explanations_input(wildcards):
    return [
        f"{validation_ratings.RATINGS_DIR}/{name}.csv" for name in PLAN.rating_files()
    ]


def get_validation_model_metric_paths(wildcards=None):
    """metric -> each model metric's job over the rated explanations (merged by
    validate_metrics)."""
    return PLAN.validation_model_metric_paths()


def get_validation_paths():
    """Every output of rule validate_metrics."""
    tables = [
        f"results/tables/{name}.{ext}"
        for name in VALIDATION_TABLES
        for ext in TABLE_FORMATS
    ]
    data = [f"results/tables/{name}.parquet" for name in validation_tables.DATA_TABLES]
    plots = [
        f"results/plots/{validation_tables.PLOT_NAME}.{ext}" for ext in ("png", "svg")
    ]
    return tables + data + plots


def get_validation_outputs():
    """The outputs of rule validate_metrics; HTML tables and the PNG go into `--report`."""
    outputs = []
    for path in get_validation_paths():
        if path.endswith((".html", ".png")):
            path = report(
                path,
                caption="../report/metric_validation.rst",
                category="Metric validation",
            )
        outputs.append(path)
    return outputs
