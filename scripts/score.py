"""Snakemake script: correctness and explanation-quality scores of one model's datasets."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.execution import get_device
from imhibench.common.logs import configure_job, log_job_start
from imhibench.score.stage import ScoreJob, run_score_model

configure_job(snakemake.log[0], snakemake.threads)
jobs = [ScoreJob(**job) for job in snakemake.params.jobs]
device = get_device(snakemake.config)
log_job_start("score", model=snakemake.wildcards.model, datasets=len(jobs), device=device)
run_score_model(
    snakemake.wildcards.model,
    jobs,
    labelers=snakemake.params.labelers,
    scorers=snakemake.params.scorers,
    reuse_dir=snakemake.params.reuse,
    device=device,
    seed=snakemake.params.seed,
)
