# Models of kind api (an OpenAI-compatible endpoint): no GPU, no checkpoint. `run_on` in the
# model entry picks the rule: local runs on the host running snakemake (a login node with
# internet), cluster submits through the profile to `resources.slurm_partition`.


localrules:
    generate_api_local,


rule generate_api_local:
    input:
        unpack(get_generate_input),
    output:
        "results/generate/{model}/{dataset}.parquet",
    log:
        "logs/generate/{model}/{dataset}.log",
    benchmark:
        "benchmarks/generate/{model}/{dataset}.tsv"
    wildcard_constraints:
        model=get_generate_models("generate_api_local"),
    conda:
        "../envs/generate.yaml"
    threads: 1
    params:
        model_spec=get_model_spec,
        settings=get_generation_settings,
        rows=get_generation_rows,
        seed=config["seed"],
    script:
        "../scripts/generate.py"


rule generate_api:
    input:
        unpack(get_generate_input),
    output:
        "results/generate/{model}/{dataset}.parquet",
    log:
        "logs/generate/{model}/{dataset}.log",
    benchmark:
        "benchmarks/generate/{model}/{dataset}.tsv"
    wildcard_constraints:
        model=get_generate_models("generate_api"),
    conda:
        "../envs/generate.yaml"
    threads: get_generate_resource("cpus")
    resources:
        nodes=JOB_NODES,
        mem_mb=get_generate_resource("mem_mb"),
        runtime=get_generate_resource("runtime"),
        cpus_per_task=get_generate_resource("cpus"),
        slurm_partition=get_generate_resource("slurm_partition"),
    params:
        model_spec=get_model_spec,
        settings=get_generation_settings,
        rows=get_generation_rows,
        seed=config["seed"],
    script:
        "../scripts/generate.py"
