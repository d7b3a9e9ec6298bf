"""Snakemake script: download upstream's example answers for one expert set, sha256-checked."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

import logging

from imhibench.config.plan import Plan
from imhibench.fetch.test_sets import download
from imhibench.common.logs import configure_job

configure_job(snakemake.log[0])
# The source comes from the config, not a parameter: a new mirror of the same pinned file
# does not rerun what depends on it (the sha256 is the parameter).
url = Plan(snakemake.config).example_responses_source(snakemake.wildcards.dataset)
digest = download(url, snakemake.output[0], snakemake.params.sha256)
logging.getLogger("imhibench").info("%s: sha256 %s from %s", snakemake.output[0], digest, url)
