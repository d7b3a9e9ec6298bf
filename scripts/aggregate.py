"""Snakemake script: the paper's tables from every (model, dataset) summary and label file."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from pathlib import Path

from imhibench.aggregate.specs import table_specs
from imhibench.aggregate.write import write_tables
from imhibench.config.fingerprint import config_fingerprint
from imhibench.common.logs import configure_job
from imhibench.common.provenance import build_provenance

configure_job(snakemake.log[0])
datasets = {group: d for group, d in snakemake.params.datasets.items() if d}
jobs = [tuple(job) for job in snakemake.params.jobs]
write_tables(
    summary_paths=list(snakemake.params.summary_files),
    out_dir=Path(snakemake.output[0]).parent,
    specs=table_specs(snakemake.params.labelers[0], snakemake.params.scorers, list(datasets)),
    models=snakemake.params.models,
    datasets_by_group=datasets,
    task_of=snakemake.params.tasks,
    skipped=snakemake.params.skipped,
    published=snakemake.input.published,
    published_as=snakemake.params.published_as,
    label_paths=dict(zip(jobs, snakemake.params.label_files, strict=True)),
    seed=snakemake.params.seed,
    random_weights=snakemake.params.random_weights,
    parabank2_sha256=snakemake.params.parabank2_sha256,
    provenance=build_provenance(
        "aggregate",
        inputs=len(snakemake.input),
        config_fingerprint=config_fingerprint(snakemake.config),
    ),
)
