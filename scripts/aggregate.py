"""Snakemake script: the paper's tables from every (model, dataset) summary."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from pathlib import Path

from imhibench.aggregate import table_specs, write_tables
from imhibench.config_fingerprint import config_fingerprint
from imhibench.logs import configure_job
from imhibench.provenance import build_provenance

configure_job(snakemake.log[0])
datasets = snakemake.params.datasets
groups = [group for group in ("main", "expert") if datasets[group]]
write_tables(
    summary_paths=list(snakemake.input.metrics),
    out_dir=Path(snakemake.output[0]).parent,
    specs=table_specs(snakemake.params.labelers[0], snakemake.params.scorers, groups),
    models=snakemake.params.models,
    datasets_by_group=datasets,
    notes=snakemake.params.notes,
    published=snakemake.input.get("published"),
    provenance=build_provenance(
        "aggregate",
        inputs=len(snakemake.input.metrics),
        config_fingerprint=config_fingerprint(snakemake.config),
    ),
)
