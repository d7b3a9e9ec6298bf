"""Snakemake script: one model metric (GPTScore, LLM judge) of one (model, dataset)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.execution import get_device
from imhibench.common.logs import announce_job, configure_job
from imhibench.score.stage import run_model_metric

configure_job(snakemake.log[0], snakemake.threads)
announce_job(
    snakemake.wildcards.metric, snakemake.wildcards.model, snakemake.wildcards.dataset,
    snakemake.input.responses, get_device(snakemake.config),
)  # fmt: skip
run_model_metric(
    metric=snakemake.wildcards.metric,
    options=snakemake.params.options,
    responses_path=snakemake.input.responses,
    test_set_path=snakemake.input.test_set,
    out_path=snakemake.output[0],
    model=snakemake.wildcards.model,
    dataset=snakemake.wildcards.dataset,
    device=get_device(snakemake.config),
)
