"""Snakemake script: one model's answers, worst-scoring first, as an HTML page per dataset."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.logs import configure_job
from imhibench.aggregate.samples import write_samples

configure_job(snakemake.log[0])
write_samples(
    pages=snakemake.params.pages,
    model=snakemake.wildcards.model,
    labelers=snakemake.params.labelers,
)
