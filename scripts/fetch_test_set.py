"""Snakemake script: download one IMHI test file, verify it, write its Parquet."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.config.plan import Plan
from imhibench.fetch.test_sets import run_fetch_test_set
from imhibench.common.logs import configure_job

configure_job(snakemake.log[0])
# The source is read from the config, not a rule parameter: a new mirror of the same pinned,
# checksummed file does not make every downstream job rerun.
# A user's own file (local_path) is the rule's input "local".
url = snakemake.input.get("local") or Plan(snakemake.config).test_file_source(
    snakemake.wildcards.dataset, snakemake.wildcards.split
)
run_fetch_test_set(
    url=url,
    sha256=snakemake.params.sha256,
    dataset=snakemake.wildcards.dataset,
    task=snakemake.params.task,
    split=snakemake.wildcards.split,
    csv_out=snakemake.output.csv,
    parquet_out=snakemake.output.parquet,
)
