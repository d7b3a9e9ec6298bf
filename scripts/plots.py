"""Snakemake script: every figure of the aggregate stage (PNG and SVG)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from pathlib import Path

from imhibench.common.logs import configure_job
from imhibench.aggregate.plots import write_plots

configure_job(snakemake.log[0])
jobs = [tuple(job) for job in snakemake.params.jobs]
write_plots(
    table_paths=list(snakemake.input.tables),
    all_metrics_path=snakemake.input.all_metrics,
    label_paths=dict(zip(jobs, snakemake.params.label_files, strict=True)),
    labeler=snakemake.params.labeler,
    task_labels=snakemake.params.task_labels,
    out_dir=Path("results/plots"),
    labeler_comparison={"mentalbert", "rule"} <= set(snakemake.params.labelers),
)
