"""Snakemake script: label every response with the configured labelers."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.execution import get_device
from imhibench.label import run_label
from imhibench.common.logs import announce_job, configure_job

configure_job(snakemake.log[0], snakemake.threads)
announce_job(
    "label", snakemake.wildcards.model, snakemake.wildcards.dataset, snakemake.input.responses,
    get_device(snakemake.config),
)  # fmt: skip
run_label(
    responses_path=snakemake.input.responses,
    test_set_path=snakemake.input.test_set,
    out_path=snakemake.output[0],
    task_name=snakemake.params.task,
    labelers=snakemake.params.labelers,
    classifier_dir=snakemake.input.get("classifier"),
    device=get_device(snakemake.config),
    batch_size=snakemake.params.batch_size,
    dtype=snakemake.params.dtype,
)
