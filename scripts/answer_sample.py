"""Snakemake script: one (model, dataset)'s answers, worst-scoring first, as an HTML page."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.logs import configure_job
from imhibench.aggregate.samples import write_sample

configure_job(snakemake.log[0])
write_sample(
    test_set_path=snakemake.input.test_set,
    responses_path=snakemake.input.responses,
    labels_path=snakemake.input.labels,
    scores_path=snakemake.input.scores,
    out_path=snakemake.output[0],
    model=snakemake.wildcards.model,
    dataset=snakemake.wildcards.dataset,
    labelers=snakemake.params.labelers,
)
