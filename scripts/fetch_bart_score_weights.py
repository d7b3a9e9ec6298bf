"""Snakemake script: bring the BARTScore ParaBank2 weights file (Google Drive, URL or path)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.config.plan import Plan
from imhibench.common.logs import configure_job
from imhibench.fetch.scorer_weights import fetch_weights_file

configure_job(snakemake.log[0])
# The pin is read here, not passed as a param: pinning a fetched file's digest refetches nothing.
pinned = Plan(snakemake.config).bart_score_weights()["sha256"]
fetch_weights_file({**snakemake.params.source, "sha256": pinned}, snakemake.output.weights)
