import re
import sys
from pathlib import Path

# Rules and scripts use the imhibench package that ships with this workflow.
sys.path.insert(0, workflow.basedir)

from imhibench.aggregate import table_specs
from imhibench.config import Plan, checkpoint_dir, validate_config
from imhibench.scorer_weights import WEIGHTS_PATH as BART_SCORE_WEIGHTS
from imhibench.config_fingerprint import check_tables_match_config
from imhibench.execution import answer_model_spec, answer_settings
from imhibench.tasks import all_tasks

validate_config(config, Path(workflow.basedir) / "workflow_config" / "schema.yaml")
PLAN = Plan(config)
ALL_TASKS = list(all_tasks())
for message in PLAN.skip_messages():
    logger.warning(f"imhi-bench: {message}")


def get_report_requested():
    """Whether this is `snakemake --report ...` (Snakemake tells the Snakefile nothing else)."""
    return any(arg == "--report" or arg.startswith("--report=") for arg in sys.argv)


# A report must not present tables made with another config as this config's.
if get_report_requested():
    check_tables_match_config("results/tables", config)


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


wildcard_constraints:
    model=_alternatives(PLAN.models),
    dataset=_alternatives(PLAN.datasets),
    split="instruction|completion",
    checkpoint=_alternatives(PLAN.hub_checkpoints()),


SCRIPTS = Path(workflow.basedir) / "scripts"
TABLES = table_specs(
    config["labelers"][0],
    list(config["scorers"]),
    [g for g in ("main", "expert") if PLAN.table_datasets(g)],
)


def get_final_outputs():
    return get_table_outputs()


def get_table_outputs():
    names = [
        f"{spec.name}.{ext}" for spec in TABLES for ext in ("parquet", "md", "html")
    ]
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


def get_bart_score_weights_spec(wildcards):
    return PLAN.bart_score_weights()


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
    if spec["kind"] == "responses":
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


def get_generation_settings(wildcards):
    """Answer-affecting settings only: execution settings (batching, shards) and the device
    are read by the script from the config, so changing them reruns nothing."""
    return answer_settings(PLAN.generation_settings(wildcards.model))


def get_generate_resource(name):
    def get_resource(wildcards):
        return PLAN.model(wildcards.model)["resources"][name]

    return get_resource


# ---- label and score ---------------------------------------------------------------------


def get_label_input(wildcards):
    inputs = {
        "responses": f"results/generate/{wildcards.model}/{wildcards.dataset}.parquet",
        "test_set": get_test_set(wildcards),
    }
    if "mentalbert" in config["labelers"]:
        inputs["classifier"] = checkpoint_dir(PLAN.classifier(wildcards.dataset))
    return inputs


def get_score_input(wildcards):
    inputs = {
        "responses": f"results/generate/{wildcards.model}/{wildcards.dataset}.parquet",
        "labels": f"results/label/{wildcards.model}/{wildcards.dataset}.parquet",
        "test_set": get_test_set(wildcards),
    }
    for name, checkpoint in PLAN.scorer_checkpoints().items():
        inputs[name] = checkpoint_dir(checkpoint)
    if PLAN.bart_score_weights_path():
        inputs["bart_score_weights"] = PLAN.bart_score_weights_path()
    return inputs


def get_scorer_settings(wildcards):
    return PLAN.scorer_settings()


def get_stage_resource(stage, name):
    def get_resource(wildcards):
        return config["stage_resources"][stage][name]

    return get_resource


# ---- aggregate ---------------------------------------------------------------------------


def get_metrics_inputs(wildcards):
    return [f"results/metrics/{m}/{d}.parquet" for m, d in PLAN.jobs]


def get_aggregate_input(wildcards):
    """Every summary, and the published-numbers CSV when set (an input: replacing it reruns)."""
    inputs = {"metrics": get_metrics_inputs(wildcards)}
    if config.get("published_weighted_f1"):
        inputs["published"] = config["published_weighted_f1"]
    return inputs


def get_table_datasets(wildcards):
    return {group: PLAN.table_datasets(group) for group in ("main", "expert")}


def get_label_dtype(wildcards):
    return config["label_dtype"]


def get_table_notes(wildcards):
    return [message[0].upper() + message[1:] for message in PLAN.skip_messages()]
