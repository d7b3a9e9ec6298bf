# imhi-bench: the IMHI benchmark of MentaLLaMA as a Snakemake workflow.
# Non-clinical research use only. See README.md.
import os

from snakemake.utils import min_version

min_version("8.20")


# The paper configuration, next to this Snakefile; --configfile / --config override its keys.
configfile: os.path.join(workflow.basedir, "workflow_config", "config.yaml")


# `snakemake --report report.html`: the tables (category Tables) and their provenance.
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/demo.smk"
include: "rules/generate.smk"
include: "rules/generate_api.smk"
include: "rules/label.smk"
include: "rules/score_metric.smk"
include: "rules/score.smk"
include: "rules/aggregate.smk"
include: "rules/validate_metrics.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
