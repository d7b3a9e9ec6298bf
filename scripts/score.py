"""Snakemake script: correctness and explanation-quality scores of one (model, dataset)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.execution import get_device
from imhibench.common.logs import announce_job, configure_job
from imhibench.score.stage import run_score

configure_job(snakemake.log[0], snakemake.threads)
announce_job(
    "score", snakemake.wildcards.model, snakemake.wildcards.dataset, snakemake.input.responses,
    get_device(snakemake.config),
)  # fmt: skip
run_score(
    responses_path=snakemake.input.responses,
    labels_path=snakemake.input.labels,
    test_set_path=snakemake.input.test_set,
    rows_out=snakemake.output.rows,
    summary_out=snakemake.output.summary,
    model=snakemake.wildcards.model,
    dataset=snakemake.wildcards.dataset,
    task_name=snakemake.params.task,
    labelers=snakemake.params.labelers,
    scorers=snakemake.params.scorers,
    device=get_device(snakemake.config),
    seed=snakemake.params.seed,
    model_metric_paths=snakemake.params.model_metrics,
)
