rule generate:
    input:
        unpack(get_generate_input),
    output:
        "results/generate/{model}/{dataset}.parquet",
    log:
        "logs/generate/{model}/{dataset}.log",
    benchmark:
        "benchmarks/generate/{model}/{dataset}.tsv"
    wildcard_constraints:
        model=get_generate_models("generate"),
    conda:
        "../envs/generate.yaml"
    threads: get_generate_resource("cpus")
    resources:
        nodes=JOB_NODES,
        gpu=get_generate_resource("gpu"),
        mem_mb=get_generate_resource("mem_mb"),
        runtime=get_generate_resource("runtime"),
        cpus_per_task=get_generate_resource("cpus"),
    params:
        model_spec=get_model_spec,
        settings=get_generation_settings,
        rows=get_generation_rows,
        seed=config["seed"],
    script:
        "../scripts/generate.py"
