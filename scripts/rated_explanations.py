"""Snakemake script: upstream's rated explanations as the inputs of the model metrics' jobs."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from pathlib import Path

from imhibench.common.logs import configure_job, log_job_start
from imhibench.validate_metrics.ratings import write_rated_explanations

configure_job(snakemake.log[0], snakemake.threads)
paths = {Path(path).stem: path for path in snakemake.input}
log_job_start("rated_explanations", rating_files=", ".join(paths))
write_rated_explanations(paths, snakemake.output.responses, snakemake.output.test_set)
