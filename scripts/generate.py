"""Snakemake script: one response per query of a test set, from one model.

Guarded by ``if __name__ == "__main__":`` (Snakemake runs this file with ``python``, so the
guard holds): a process started with ``spawn`` (vLLM's engine core, when CUDA was initialised
first) re-imports the main script as ``__mp_main__``, and must not reopen the job's log, take
the output's lock or start the job again.
"""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")

from imhibench.common.execution import get_device, get_generation_settings
from imhibench.common.execution import get_model_spec, is_imported
from imhibench.generate.stage import run_generate
from imhibench.common.logs import announce_job, configure_job

if __name__ == "__main__":
    configure_job(snakemake.log[0], snakemake.threads)
    model_spec = get_model_spec(snakemake.config, snakemake.wildcards.model)
    announce_job(
        "generate", snakemake.wildcards.model, snakemake.wildcards.dataset,
        snakemake.input.test_set,
        None if is_imported(model_spec) else get_device(snakemake.config),
        snakemake.params.settings.get("dtype"), snakemake.params.rows,
    )  # fmt: skip
    run_generate(
        test_set_path=snakemake.input.test_set,
        out_path=snakemake.output[0],
        model=snakemake.wildcards.model,
        model_spec=model_spec,
        model_dir=snakemake.input.get("model"),
        base_model_dir=snakemake.input.get("base"),
        responses_path=snakemake.input.get("responses"),
        settings=get_generation_settings(
            snakemake.config, snakemake.wildcards.model, snakemake.params.settings
        ),
        rows=snakemake.params.rows,
        device=get_device(snakemake.config),
        seed=snakemake.params.seed,
    )
