rule label:
    input:
        unpack(get_label_input),
    output:
        "results/label/{model}/{dataset}.parquet",
    log:
        "logs/label/{model}/{dataset}.log",
    benchmark:
        "benchmarks/label/{model}/{dataset}.tsv"
    conda:
        "../envs/label.yaml"
    threads: get_stage_resource("label", "cpus")
    resources:
        nodes=JOB_NODES,
        gpu=get_stage_resource("label", "gpu"),
        mem_mb=get_stage_resource("label", "mem_mb"),
        runtime=get_stage_resource("label", "runtime"),
        cpus_per_task=get_stage_resource("label", "cpus"),
    params:
        task=get_task_name,
        labelers=config["labelers"],
        batch_size=config["label_batch_size"],
        dtype=get_label_dtype,
    script:
        "../scripts/label.py"
