"""Snakemake script: download a hub checkpoint at its pinned revision."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.checkpoints import fetch_checkpoint
from imhibench.logs import configure_job

configure_job(snakemake.log[0])
spec = snakemake.params.spec
fetch_checkpoint(
    spec["hub_id"],
    spec["revision"],
    snakemake.output[0],
    weights=spec.get("weights", "safetensors"),
)
