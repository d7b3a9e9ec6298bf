"""Snakemake script: the explanation metrics against upstream's human ratings."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from pathlib import Path

from imhibench.config.plan import Plan
from imhibench.config.fingerprint import config_fingerprint
from imhibench.common.execution import get_device
from imhibench.common.logs import configure_job, log_job_start
from imhibench.validate_metrics.run import run_validate_metrics

configure_job(snakemake.log[0], snakemake.threads)
names = snakemake.params.rating_files
log_job_start(
    "validate_metrics", rating_files=", ".join(names), device=get_device(snakemake.config)
)
plan = Plan(snakemake.config)
tables = [path for path in snakemake.output if path.endswith(".parquet")]
plots = [path for path in snakemake.output if path.endswith(".png")]
run_validate_metrics(
    rating_paths=dict(zip(names, snakemake.input.ratings, strict=True)),
    settings=snakemake.params.scorers,
    tables_dir=Path(tables[0]).parent,
    plot_base=Path(plots[0]).with_suffix(""),
    device=get_device(snakemake.config),
    seed=snakemake.params.seed,
    n_resamples=snakemake.params.resamples,
    sources={name: plan.rating_file_source(name) for name in names},
    parabank2_sha256=snakemake.params.parabank2_sha256,
    model_metric_paths={m: snakemake.input[m] for m in snakemake.params.model_metrics},
    config_fingerprint=config_fingerprint(snakemake.config),
)
