"""Where the pipeline keeps what it fetches and writes: checkpoint folders, test sets,
model-metric outputs."""

from __future__ import annotations

CHECKPOINT_ROOT = "resources/checkpoints"
IMHI_ROOT = "resources/imhi"
CHECKPOINT_FIELDS = ("hub_id", "revision", "weights", "path")
MODEL_METRIC_ROOT = "results/model_metrics"
# The metric validation runs each model metric's job over upstream's rated explanations as the
# (model, dataset) below; the leading underscore keeps it apart from every catalog name.
VALIDATION_JOB = ("_human_ratings", "rated_explanations")
# The rated explanations as that job's inputs: responses (the explanations), test set (posts).
RATED_EXPLANATIONS = {
    "responses": "results/metric_validation/rated_explanations.parquet",
    "test_set": "results/metric_validation/rated_posts.parquet",
}


def checkpoint_key(spec: dict) -> str:
    """Directory name of a hub checkpoint: owner--name@revision."""
    return f"{spec['hub_id'].replace('/', '--')}@{spec['revision']}"


def checkpoint_dir(spec: dict) -> str:
    """Where a checkpoint lives: its local `path`, or the fetch stage's output directory."""
    if spec.get("path"):
        return spec["path"]
    return f"{CHECKPOINT_ROOT}/{checkpoint_key(spec)}"
