"""Snakemake script: download one of upstream's human-rating files, sha256-checked."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

import logging

from imhibench.config.plan import Plan
from imhibench.fetch.test_sets import download
from imhibench.common.logs import configure_job

configure_job(snakemake.log[0])
# The source comes from the config, not a parameter: a new mirror of the same pinned file
# does not rerun the validation (the sha256 is the parameter).
url = Plan(snakemake.config).rating_file_source(snakemake.wildcards.rating_file)
digest = download(url, snakemake.output[0], snakemake.params.sha256, what="pinned rating file")
logging.getLogger("imhibench").info("%s: sha256 %s from %s", snakemake.output[0], digest, url)
