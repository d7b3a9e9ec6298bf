"""Snakemake script: build the tiny demo models (random weights, trained-on-the-spot tokenizers)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from pathlib import Path

from imhibench.demo_models import build_demo_models
from imhibench.common.logs import configure_job
from imhibench.common.tasks import all_tasks

configure_job(snakemake.log[0])
build_demo_models(
    Path(snakemake.output.manifest).parent,
    {name: list(task.classifier_labels) for name, task in all_tasks().items()},
    seed=snakemake.params.seed,
)
