"""Snakemake script: download a hub checkpoint at its pinned revision."""

import os
import sys

# No telemetry call to huggingface.co beside the download itself (HF_ENDPOINT may be a mirror).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.fetch.checkpoints import fetch_checkpoint
from imhibench.common.logs import configure_job

configure_job(snakemake.log[0])
spec = snakemake.params.spec
fetch_checkpoint(
    spec["hub_id"],
    spec["revision"],
    snakemake.output[0],
    weights=spec.get("weights", "safetensors"),
)
