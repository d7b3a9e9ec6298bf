"""Snakemake script: label every response of one model's datasets with the configured
labelers."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.execution import get_device
from imhibench.common.logs import configure_job, log_job_start
from imhibench.label import LabelJob, run_label_model

configure_job(snakemake.log[0], snakemake.threads)
jobs = [LabelJob(**job) for job in snakemake.params.jobs]
device = get_device(snakemake.config)
log_job_start("label", model=snakemake.wildcards.model, datasets=len(jobs), device=device)
run_label_model(
    jobs,
    labelers=snakemake.params.labelers,
    reuse_dir=snakemake.params.reuse,
    device=device,
    batch_size=snakemake.params.batch_size,
    dtype=snakemake.params.dtype,
)
