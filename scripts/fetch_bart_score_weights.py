"""Snakemake script: bring the BARTScore ParaBank2 weights file (Google Drive, URL or path)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.logs import configure_job
from imhibench.scorer_weights import fetch_weights_file

configure_job(snakemake.log[0])
fetch_weights_file(snakemake.params.spec, snakemake.output.weights)
